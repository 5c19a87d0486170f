"""``bundler mirror`` against a loop of ``skopeo copy --all`` and against bundler's own
export + import of the same set, side by side; and mirror's peak memory on a huge layer.

The source is the benchmark set of ``bench_vs_skopeo.py`` (26 tags in 6 repositories,
shared base layers, two multi-arch indexes; about 700 MiB of distinct blobs at
``--scale 1``; its seeded storage is cached under the work directory). For each of
``--runs`` rounds (after ``--warmup`` uncounted ones), in an order that rotates from
round to round, each way copies the whole set into a destination registry on empty
storage:

* mirror:        ``bundler mirror -f images.txt --to DEST/mirror``
* skopeo:        a shell loop of ``skopeo copy --all docker://SRC/NAME
  docker://DEST/mirror/NAME``, one per tag
* export+import: ``bundler export -f images.txt -o DIR`` then ``bundler import DIR --to
  DEST/mirror`` (timed together; the bundle is removed after the round)

Then, unless ``--big-size 0``, ``bundler mirror`` of one image whose single layer is
``--big-size`` random bytes (the cached source of ``bench_memory.py``), for the peak RSS
whatever the blob size. Prints medians, ratios, peak RSS and PASS/FAIL against the
targets of issue #11 (mirror <= 0.5x skopeo, <= 0.7x export+import, peak RSS < 150 MB
with ``--jobs 8``), with the CPU seconds each way costs bundler (or skopeo) and each
registry. MB is 10**6 bytes.

Usage:
    python bench/bench_mirror.py --scale 0.1 --runs 1 --big-size 64MiB   # about a minute
    python bench/bench_mirror.py --runs 3 --json mirror.json             # full size
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import psutil
from _harness import (
    MB,
    Run,
    bundler_command,
    fresh_registry,
    machine,
    machine_line,
    mb,
    measure,
    median,
    prepare_workdir,
    remove,
    run_rounds,
)
from bench_memory import REPOSITORY as BIG_REPOSITORY
from bench_memory import TAG as BIG_TAG
from bench_memory import seeded_source as big_source
from bench_vs_skopeo import SET_VERSION, SourceSet, seeded_source

from bundler.cli.options import parse_size
from bundler.sandbox import LocalRegistry

PREFIX = "mirror"
WAYS = ("mirror", "skopeo", "export+import")


class Bench:
    """Runs and records every measured step."""

    def __init__(self, args: argparse.Namespace, source: SourceSet) -> None:
        self.args = args
        self.work: Path = args.workdir
        self.source = source
        self.cli = bundler_command()
        self.jobs = str(args.jobs)
        self.times: dict[str, list[float]] = {w: [] for w in WAYS}
        self.cpu: dict[str, list[float]] = {w: [] for w in WAYS}
        self.rss: dict[str, list[int]] = {w: [] for w in WAYS}
        self.warmup_times: dict[str, list[float]] = {w: [] for w in WAYS}
        #: (source, destination) registry CPU seconds of each counted run
        self.registry_cpu: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
        self.images_file = self.work / "images.txt"
        self.images_file.write_text("\n".join(source.ref(n) for n in source.names) + "\n")
        self.bundle = self.work / "bundle"

    # -- commands -----------------------------------------------------------------
    def mirror(self, dest: str) -> list[str]:
        return [*self.cli, "mirror", "-f", str(self.images_file), "--to", f"{dest}/{PREFIX}",
                "-q", "--jobs", self.jobs]

    def skopeo(self, dest: str) -> list[str]:
        path = self.work / "skopeo-mirror.sh"
        lines = ["set -e"] + [shlex.join([
            "skopeo", "copy", "-q", "--all", "--src-tls-verify=false",
            "--dest-tls-verify=false", f"docker://{self.source.ref(n)}",
            f"docker://{dest}/{PREFIX}/{n}"]) for n in self.source.names]
        path.write_text("\n".join(lines) + "\n")
        return ["sh", str(path)]

    def export(self) -> list[str]:
        return [*self.cli, "export", "-f", str(self.images_file), "-o", str(self.bundle),
                "-q", "--jobs", self.jobs]

    def import_(self, dest: str) -> list[str]:
        return [*self.cli, "import", str(self.bundle), "--to", f"{dest}/{PREFIX}", "-q",
                "--jobs", self.jobs]

    # -- measuring ------------------------------------------------------------------
    def _run(self, argv: list[str], name: str) -> Run:
        os.sync()  # what earlier steps wrote is on disk before this step's clock starts
        return measure(argv, log=self.work / "logs" / f"{name}.log")

    def way(self, way: str, index: int, warmup: bool) -> None:
        dest = fresh_registry(self.work / "dest")
        registries = (self.source.registry, dest)
        before = [registry_cpu(r) for r in registries]
        try:
            if way == "export+import":
                remove(self.bundle)
                runs = [self._run(self.export(), f"export-{index}"),
                        self._run(self.import_(dest.host), f"import-{index}")]
                remove(self.bundle)
            elif way == "mirror":
                runs = [self._run(self.mirror(dest.host), f"mirror-{index}")]
            else:
                runs = [self._run(self.skopeo(dest.host), f"skopeo-{index}")]
            src_cpu, dest_cpu = (registry_cpu(r) - b for r, b in zip(registries, before,
                                                                        strict=True))
        finally:
            dest.stop()
            remove(self.work / "dest")
        wall = sum(r.wall_s for r in runs)
        if warmup:
            self.warmup_times[way].append(wall)
            print(f"  {way:<14} {wall:8.2f} s  (warm-up)", file=sys.stderr, flush=True)
            return
        self.times[way].append(wall)
        self.cpu[way].append(sum(r.cpu_s for r in runs))
        self.rss[way].append(max(r.rss for r in runs))
        self.registry_cpu[way].append((src_cpu, dest_cpu))
        print(f"  {way:<14} {wall:8.2f} s  CPU {self.cpu[way][-1]:6.2f} s (registries: "
              f"source {src_cpu:.2f} s, destination {dest_cpu:.2f} s)  peak RSS "
              f"{mb(self.rss[way][-1])}", file=sys.stderr, flush=True)

    def round(self, index: int, *, warmup: bool = False) -> None:
        """Every way once, the order rotated by the round's number."""
        shift = index % len(WAYS)
        order = WAYS[shift:] + WAYS[:shift]
        total = self.args.warmup if warmup else self.args.runs
        print(f"{'warm-up round' if warmup else 'round'} {index + 1}/{total}: "
              f"{', '.join(order)}", file=sys.stderr, flush=True)
        for way in order:
            self.way(way, index, warmup)


def registry_cpu(registry: LocalRegistry) -> float:
    """User + system CPU seconds the registry process has used so far."""
    assert registry.process is not None
    times = psutil.Process(registry.process.pid).cpu_times()
    return times.user + times.system


def big_layer(args: argparse.Namespace, cli: list[str]) -> dict | None:
    """``bundler mirror`` of one image with one ``--big-size`` layer: wall time, RSS."""
    size = parse_size(args.big_size) if args.big_size not in ("0", "") else 0
    if not size:
        return None
    cache = args.workdir / "big"
    cache.mkdir(exist_ok=True)
    source, layer_size = big_source(cache, size)
    try:
        dest = fresh_registry(args.workdir / "dest")
        try:
            argv = [*cli, "mirror", f"{source.host}/{BIG_REPOSITORY}:{BIG_TAG}", "--to",
                    f"{dest.host}/mem", "-q", "--jobs", str(args.jobs)]
            run = measure(argv, log=args.workdir / "logs" / "mirror-big.log")
        finally:
            dest.stop()
            remove(args.workdir / "dest")
    finally:
        source.stop()
    return {"layer_size": layer_size, "wall_s": run.wall_s, "cpu_s": run.cpu_s,
            "peak_rss": run.rss, "command": shlex.join(argv)}


def report(bench: Bench, big: dict | None, args: argparse.Namespace) -> dict:
    """Print the table and return the JSON document."""
    source = bench.source
    med = {w: median(v) for w, v in bench.times.items()}
    cpu = {w: median(v) for w, v in bench.cpu.items()}
    peak = {w: max(v) for w, v in bench.rss.items()}
    vs_skopeo = med["mirror"] / med["skopeo"]
    vs_bundle = med["mirror"] / med["export+import"]
    mirror_peak = max([peak["mirror"]] + ([big["peak_rss"]] if big else []))
    targets = {
        "mirror <= 0.5x skopeo copy loop": vs_skopeo <= 0.5,
        "mirror <= 0.7x export + import": vs_bundle <= 0.7,
        f"mirror peak RSS < 150 MB (--jobs {args.jobs})": mirror_peak < 150 * MB,
    }
    print()
    print(machine_line())
    print(f"image set {SET_VERSION} scale {args.scale:g}: {len(source.names)} tags, "
          f"{source.blobs} distinct blobs, {mb(source.unique_bytes)} unique; runs {args.runs} "
          f"(after {args.warmup} warm-up), bundler --jobs {args.jobs}")
    print()
    regs = {w: tuple(median([c[i] for c in v]) for i in (0, 1))
            for w, v in bench.registry_cpu.items()}
    print(f"{'way':<14} {'median s':>9} {'CPU s':>7} {'src reg CPU':>12} "
          f"{'dest reg CPU':>13} {'peak RSS':>10} {'MB/s':>7}")
    for way in WAYS:
        print(f"{way:<14} {med[way]:>9.2f} {cpu[way]:>7.2f} {regs[way][0]:>10.2f} s "
              f"{regs[way][1]:>11.2f} s {mb(peak[way]):>10} "
              f"{source.unique_bytes / med[way] / MB:>7.1f}")
    print(f"\nmirror / skopeo {vs_skopeo:.2f}, mirror / (export + import) {vs_bundle:.2f}")
    if big:
        print(f"mirror of one {mb(big['layer_size'])} layer: {big['wall_s']:.2f} s, "
              f"{big['layer_size'] / big['wall_s'] / MB:.1f} MB/s, peak RSS "
              f"{mb(big['peak_rss'])}")
    print()
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "set": {"version": SET_VERSION, "scale": args.scale, "tags": len(source.names),
                "blobs": source.blobs, "unique_bytes": source.unique_bytes},
        "runs": args.runs, "warmup_rounds": args.warmup, "jobs": args.jobs,
        "seconds": bench.times, "warmup_seconds": bench.warmup_times,
        "cpu_seconds": bench.cpu, "median_s": med, "median_cpu_s": cpu,
        "registry_cpu_seconds": bench.registry_cpu, "median_registry_cpu_s": regs,
        "peak_rss_bytes": peak, "big_layer": big,
        "ratio_mirror_over_skopeo": vs_skopeo, "ratio_mirror_over_export_import": vs_bundle,
        "targets": targets,
        "commands": {
            "mirror": shlex.join(bench.mirror("DEST")),
            "skopeo": (bench.work / "skopeo-mirror.sh").read_text(),
            "export+import": shlex.join(bench.export()) + " && "
                             + shlex.join(bench.import_("DEST")),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="uncounted rounds before them (default 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full set (0.1 for a quick check)")
    parser.add_argument("--jobs", type=int, default=8, help="bundler --jobs (default 8)")
    parser.add_argument("--big-size", default="1GiB",
                        help="layer of the peak-RSS run (default 1GiB; 0: skip it)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench-mirror"),
                        help="logs, bundles and the cached seeded sources "
                             "(default /tmp/bundler-bench-mirror)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    prepare_workdir(args, parser)
    source = seeded_source(args.workdir, args.scale)
    bench = Bench(args, source)
    try:
        run_rounds(bench, args)
    finally:
        source.registry.stop()
        remove(bench.bundle)
    big = big_layer(args, bench.cli)
    doc = report(bench, big, args)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(doc["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
