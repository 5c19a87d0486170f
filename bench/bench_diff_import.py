"""Differential import: the check before the push costs no blob request the plain import
does not make.

The source and the new versions are those of ``bench_diff.py`` (the benchmark set of
``bench_vs_skopeo.py``, then ``apps/web:1.3`` and ``1.4`` sharing its base layers). Three
bundles are exported once (not timed): ``base.tar`` (the set), ``full.tar`` (the set
plus the new versions, a full bundle) and ``diff.tar`` (the same images,
``--since base``). For each of ``--runs`` rounds (after ``--warmup`` uncounted ones), in
alternating order, a fresh destination registry gets ``base.tar`` (not timed), then:

* diff: ``bundler import diff.tar --to REG/mirror`` (the omitted blobs checked first);
* full: ``bundler import full.tar --to REG/mirror`` (nothing to check).

It reports the median wall time of each, and the requests the destination registry
logged during each import, by kind (blob HEADs, manifest HEADs, GETs, uploads, mounts,
manifest PUTs), from the last round. The two imports push the same blobs and
manifests; the diff import adds one GET (the base's registry receipt).

Usage:
    python bench/bench_diff_import.py --scale 0.1 --runs 3
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from _harness import (
    bundler_command,
    exit_on_sigterm,
    fresh_dir,
    fresh_registry,
    machine_line,
    mb,
    measure,
    median,
    remove,
)
from bench_diff import push_new_versions
from bench_vs_skopeo import SourceSet, seeded_source


def kinds(requests: list[tuple[str, str]]) -> Counter:
    """Requests by kind (the ping and token requests left out)."""
    out: Counter = Counter()
    for method, uri in requests:
        if uri == "/v2/":
            continue
        if "/blobs/uploads/" in uri:
            kind = "mount" if method == "POST" and "mount=" in uri else f"upload {method}"
        elif "/blobs/" in uri:
            kind = f"blob {method}"
        elif "/manifests/" in uri:
            kind = f"manifest {method}"
        else:
            kind = f"other {method}"
        out[kind] += 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds (default 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="layer size multiplier (default 1: about 700 MiB of blobs)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench-skopeo"),
                        help="work directory; the seeded source is cached here")
    args = parser.parse_args()
    exit_on_sigterm()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = seeded_source(work, args.scale)
    try:
        return run(args, work, fresh_dir(work / "logs-diff-import"), source)
    finally:
        source.registry.stop()


def run(args: argparse.Namespace, work: Path, logs: Path, source: SourceSet) -> int:
    cli = bundler_command()
    new_names = push_new_versions(source, args.scale)
    base_list, new_list = work / "images-base.txt", work / "images-diff.txt"
    base_list.write_text("".join(source.ref(n) + "\n" for n in source.names))
    new_list.write_text("".join(source.ref(n) + "\n" for n in [*source.names, *new_names]))
    bundles = {name: work / f"import-{name}.tar" for name in ("base", "full", "diff")}
    for path in bundles.values():
        remove(path)
        remove(path.with_name(path.name + ".receipt.json"))
    measure([*cli, "export", "-q", "-f", str(base_list), "-o", str(bundles["base"])],
            log=logs / "base.log")
    measure([*cli, "export", "-q", "-f", str(new_list), "-o", str(bundles["full"])],
            log=logs / "full.log")
    measure([*cli, "export", "-q", "-f", str(new_list), "-o", str(bundles["diff"]), "--since",
             str(bundles["base"])], log=logs / "diff.log")
    times: dict[str, list[float]] = {"diff": [], "full": []}
    counts: dict[str, Counter] = {}
    for index in range(args.warmup + args.runs):
        counted = index >= args.warmup
        for step in (["diff", "full"] if index % 2 == 0 else ["full", "diff"]):
            dest = fresh_registry(fresh_dir(work / "diff-import-dest"))
            try:
                measure([*cli, "import", "-q", str(bundles["base"]), "--to",
                         f"{dest.host}/mirror"], log=logs / f"base-{index}-{step}.log")
                mark = dest.mark()
                done = measure([*cli, "import", "-q", str(bundles[step]), "--to",
                                f"{dest.host}/mirror"], log=logs / f"{step}-{index}.log")
                counts[step] = kinds(dest.requests(mark))
            finally:
                dest.stop()
            if counted:
                times[step].append(done.wall_s)
            print(f"round {index + 1}{'' if counted else ' (warm-up)'}: {step} "
                  f"{done.wall_s:.2f} s", file=sys.stderr)
    print(machine_line())
    print(f"set: {len(source.names)} tags + {len(new_names)} new versions at scale "
          f"{args.scale:g}; full.tar {mb(bundles['full'].stat().st_size)}, diff.tar "
          f"{mb(bundles['diff'].stat().st_size)}")
    for step in ("diff", "full"):
        print(f"{step} import: median {median(times[step]):.2f} s of {args.runs} "
              f"({', '.join(f'{t:.2f}' for t in times[step])}); requests "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts[step].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
