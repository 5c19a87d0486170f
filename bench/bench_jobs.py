"""Which ``--jobs`` should be the default? bundler's export, import and mirror at several
``--jobs``, on loopback and over a slow link (issue #17, part 6).

The source is the benchmark set of ``bench_vs_skopeo.py`` (26 tags, 58 blobs, about
714 MB unique at ``--scale 1``, cached under the work directory). For each link (plain
loopback, then ``--latency-ms`` each way through the proxy of
``bundler.sandbox.latency`` in front of both registries) and each round, every
``--jobs`` value (in an order rotated from round to round) runs
``export -f list -o DIR``, ``import DIR --to DEST`` and ``mirror -f list --to DEST``, each
into fresh storage, exactly as ``bench_peers.py`` runs bundler. It prints the median
wall time and CPU seconds of each step at each ``--jobs``, and each figure over the
best of its row.

Usage:
    python bench/bench_jobs.py --jobs-list 1,2,4,8,16,32 --runs 1 --json jobs.json
    python bench/bench_jobs.py --scale 0.1 --runs 1 --warmup 0     # a quick check
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from _harness import machine, machine_line, median, prepare_workdir, remove
from bench_peers import STEPS, Bench
from bench_vs_skopeo import SET_VERSION, seeded_source


def sweep(bench: Bench, jobs_list: list[int], index: int, warmup: bool) -> None:
    """One round: every ``--jobs`` value, rotated, each step into fresh storage."""
    shift = index % len(jobs_list)
    order = jobs_list[shift:] + jobs_list[:shift]
    link = f" (+{bench.args.latency_ms:g} ms each way)" if bench.delay_s else " (loopback)"
    print(f"{'warm-up round' if warmup else 'round'} {index + 1}{link}"
          f": --jobs {', '.join(map(str, order))}", file=sys.stderr, flush=True)
    for jobs in order:
        bench.jobs, label = str(jobs), f"j{jobs}"
        remove(bench.layout("bundler"))
        bench.run("export", label, bench.export("bundler"), index, warmup)
        for step in ("import", "mirror"):
            dest, proxy, host = bench.destination("bundler")
            try:
                argv = (bench.import_("bundler", host) if step == "import"
                        else bench.mirror("bundler", host))
                bench.run(step, label, argv, index, warmup)
            finally:
                if proxy is not None:
                    proxy.stop()
                dest.stop()
                remove(bench.work / "dest")
        remove(bench.layout("bundler"))


def table(bench: Bench, jobs_list: list[int], link: str) -> dict:
    """Print the medians of one link; return them."""
    med = {s: {j: median(bench.times[s][f"j{j}"]) for j in jobs_list} for s in STEPS}
    cpu = {s: {j: median(bench.cpu[s][f"j{j}"]) for j in jobs_list} for s in STEPS}
    print(f"\n{link}: median wall s (x the best of the row) / CPU s")
    print(f"{'step':<7} " + " ".join(f"{f'--jobs {j}':>19}" for j in jobs_list))
    for step in STEPS:
        best = min(med[step].values())
        print(f"{step:<7} " + " ".join(
            f"{f'{med[step][j]:.2f} ({med[step][j] / best:.2f}x) {cpu[step][j]:.1f}':>19}"
            for j in jobs_list))
    return {"median_s": med, "median_cpu_s": cpu, "seconds": bench.times,
            "cpu_seconds": bench.cpu, "commands": bench.commands}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs-list", default="1,2,4,8,16,32",
                        help="--jobs values, comma-separated (default 1,2,4,8,16,32)")
    parser.add_argument("--latency-ms", type=float, default=25.0,
                        help="the slow link's delay each way (default 25)")
    parser.add_argument("--runs", type=int, default=1, help="rounds per link (default 1)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="uncounted rounds before them (default 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full set (0.1 for a quick check)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench-jobs"),
                        help="logs, layouts and the cached seeded source "
                             "(default /tmp/bundler-bench-jobs)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    prepare_workdir(args, parser)
    try:
        jobs_list = [int(j) for j in args.jobs_list.split(",") if j.strip()]
    except ValueError:
        parser.error("--jobs-list: whole numbers, comma-separated")
    if not jobs_list or min(jobs_list) < 1 or args.latency_ms <= 0:
        parser.error("--jobs-list: positive numbers; --latency-ms: positive")
    source = seeded_source(args.workdir, args.scale)
    links = {}
    try:
        for latency in (0.0, args.latency_ms):
            link = "loopback" if not latency else f"slow link (+{latency:g} ms each way)"
            bench = Bench(argparse.Namespace(**{**vars(args), "latency_ms": latency,
                                                "jobs": jobs_list[0]}), source, ["bundler"])
            try:
                for index in range(args.warmup):
                    sweep(bench, jobs_list, index, True)
                for index in range(args.runs):
                    sweep(bench, jobs_list, index, False)
            finally:
                bench.close()
            links[link] = bench
    finally:
        source.registry.stop()
    print()
    print(machine_line())
    print(f"image set {SET_VERSION} scale {args.scale:g}: {len(source.names)} tags, "
          f"{source.blobs} distinct blobs; runs {args.runs} (after {args.warmup} warm-up)")
    doc = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
           "set": {"version": SET_VERSION, "scale": args.scale, "tags": len(source.names),
                   "blobs": source.blobs, "unique_bytes": source.unique_bytes},
           "runs": args.runs, "warmup_rounds": args.warmup, "jobs": jobs_list,
           "latency_ms": args.latency_ms,
           "links": {link: table(bench, jobs_list, link) for link, bench in links.items()}}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
