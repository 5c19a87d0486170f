"""bundler's own CPU per MB of blob bytes: export, import and mirror of a few big layers.

Seeds a source registry (cached under the work directory) with ``--images`` images, each
one layer of random bytes (``--sizes``, default 64, 128 and 256 MiB, cycled), and runs as
subprocesses, each ``--runs`` times (after one uncounted warm-up of each):

    bundler export REFS -o WORKDIR/layout           (registry -> layout directory)
    bundler export REFS -o WORKDIR/bundle.tar       (registry -> single-file archive)
    bundler import WORKDIR/layout --to DEST/cpu     (layout directory -> registry)
    bundler import WORKDIR/bundle.tar --to DEST/cpu (archive -> registry)
    bundler mirror -f LIST --to DEST/cpu            (registry -> registry)

every destination empty before each run. It reports, per step, the median wall time and
the median user+system CPU of the bundler process in milliseconds per MB of unique blob
bytes (MB = 10**6 bytes), next to the cost of sha256 alone on this machine (the floor: every
byte is hashed once). The registries' own CPU is not counted.

``--trees OLD,NEW`` runs each step alternately with the ``bundler`` package of each
source tree (``PYTHONPATH``), for a before/after comparison in one run on a busy machine.

Usage:
    python bench/bench_cpu.py                         # 3 images: 64, 128, 256 MiB
    python bench/bench_cpu.py --runs 5 --json cpu.json
    python bench/bench_cpu.py --sizes 128MiB --images 2 --steps export,mirror
    git archive main bundler | tar -x -C /tmp/before
    python bench/bench_cpu.py --trees /tmp/before,. --runs 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _harness import (
    MB,
    BlobPusher,
    Heartbeat,
    bundler_command,
    exit_on_sigterm,
    fresh_registry,
    machine,
    machine_line,
    measure,
    median,
    remove,
)

from bundler.cli.options import parse_size
from bundler.sandbox import start_registry
from bundler.sandbox.push import _image_with_layer, _push_blob, _put_manifest

VERSION = "cpu-v1"
STEPS = ("export", "export-tar", "import", "import-tar", "mirror")


def seeded_source(workdir: Path, sizes: list[int], images: int):  # type: ignore[no-untyped-def]
    """Start the source registry on cached storage, seeding it first if needed.

    Returns:
        (registry, references as ``repository:tag`` without the host, unique bytes).
    """
    plan = [(f"cpu/img{i}", sizes[i % len(sizes)], 7100 + i) for i in range(images)]
    key = "-".join(str(s) for _, s, _ in plan)
    regdir = workdir / f"source-{VERSION}-{key}"
    marker = regdir / "seeded.json"
    if marker.exists():
        record = json.loads(marker.read_text())
        return start_registry(regdir), record["references"], record["unique_bytes"]
    print(f"seeding {images} images (cached in {regdir}) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    registry = fresh_registry(regdir)
    references, unique = [], 0
    try:
        with registry.client(timeout=600.0) as http, Heartbeat():
            pusher = BlobPusher(registry, http)
            for repository, size, seed in plan:
                layer = pusher.layer(seed, size)
                pusher.ensure(repository, layer, seed, size)
                image = _image_with_layer(layer)
                _push_blob(http, registry.url, repository, image.config)
                _put_manifest(http, registry.url, repository, "1", image.media_type,
                              image.manifest_bytes)
                references.append(f"{repository}:1")
                unique += layer.size + image.config.size
    except BaseException:
        registry.stop()
        raise
    marker.write_text(json.dumps({"references": references, "unique_bytes": unique}))
    print(f"\nseeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return registry, references, unique


def sha256_cpu_ms_per_mb(total: int = 256 * MB) -> float:
    """CPU milliseconds hashlib's sha256 takes per MB here (CPU time, not wall time: on
    a busy machine the wall clock counts other processes' turns too)."""
    chunk = os.urandom(1 << 20)
    hasher = hashlib.sha256()
    count = total // len(chunk)
    started = time.process_time()
    for _ in range(count):
        hasher.update(chunk)
    return (time.process_time() - started) * 1000 / (count * len(chunk) / MB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64MiB,128MiB,256MiB",
                        help="layer sizes, cycled over the images (default 64MiB,128MiB,256MiB)")
    parser.add_argument("--images", type=int, default=3, help="images (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="counted runs per step (default 3)")
    parser.add_argument("--jobs", type=int, default=8, help="bundler --jobs (default 8)")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"which steps (default {','.join(STEPS)})")
    parser.add_argument("--workdir", default="/tmp/bundler-bench-cpu", type=Path,
                        help="bundles, logs and the cached seeded source "
                             "(default /tmp/bundler-bench-cpu)")
    parser.add_argument("--trees", default="",
                        help="comma-separated source trees to alternate (PYTHONPATH of each "
                             "run; default: the bundler this interpreter imports)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    exit_on_sigterm()
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    layout, archive, image_list = workdir / "layout", workdir / "bundle.tar", workdir / "images.txt"

    source, references, unique = seeded_source(workdir, sizes, args.images)
    cli = bundler_command()
    trees = [str(Path(t).resolve()) for t in args.trees.split(",") if t] or [""]
    for tree in filter(None, trees):
        subprocess.run([sys.executable, "-m", "compileall", "-q", f"{tree}/bundler"],
                       check=True, stdout=subprocess.DEVNULL)
    jobs = ["--jobs", str(args.jobs), "-q"]
    refs = [f"{source.host}/{r}" for r in references]
    image_list.write_text("".join(r + "\n" for r in refs))
    results: dict[str, dict] = {}
    dest = None

    def env(tree: str) -> dict[str, str] | None:
        return {**os.environ, "PYTHONPATH": tree} if tree else None

    try:
        def command(step: str, dest_host: str) -> list[str]:
            return {
                "export": [*cli, "export", *refs, "-o", str(layout), *jobs],
                "export-tar": [*cli, "export", *refs, "-o", str(archive), *jobs],
                "import": [*cli, "import", str(layout), "--to", f"{dest_host}/cpu", *jobs],
                "import-tar": [*cli, "import", str(archive), "--to", f"{dest_host}/cpu", *jobs],
                "mirror": [*cli, "mirror", "-f", str(image_list), "--to", f"{dest_host}/cpu",
                           *jobs],
            }[step]

        # imports need the bundles: make them once, untimed, when their export is not run
        if any(s.startswith("import") for s in steps):
            for path, step in ((layout, "export"), (archive, "export-tar")):
                remove(path)
                measure(command(step, ""), log=workdir / "prepare.log", env=env(trees[-1]))
        for step in steps:
            walls: dict[str, list[float]] = {t: [] for t in trees}
            cpus: dict[str, list[float]] = {t: [] for t in trees}
            for index in range(args.runs + 1):  # the first is a warm-up
                for tree in trees:
                    if step.startswith("export"):
                        remove(layout if step == "export" else archive)
                    if dest is not None:
                        dest.stop()
                    dest = fresh_registry(workdir / "dest")
                    os.sync()
                    run = measure(command(step, dest.host), log=workdir / f"{step}.log",
                                  env=env(tree))
                    if index:
                        walls[tree].append(run.wall_s)
                        cpus[tree].append(run.cpu_s)
            for tree in trees:
                name = f"{step} {Path(tree).name}" if len(trees) > 1 else step
                results[name] = {
                    "command": " ".join(command(step, "DEST")),
                    "tree": tree,
                    "wall_s": [round(w, 3) for w in walls[tree]],
                    "cpu_s": [round(c, 3) for c in cpus[tree]],
                    "median_wall_s": round(median(walls[tree]), 3),
                    "median_cpu_s": round(median(cpus[tree]), 3),
                    "cpu_ms_per_mb": round(median(cpus[tree]) * 1000 / (unique / MB), 2),
                    "mb_per_s": round(unique / MB / median(walls[tree]), 1),
                }
    finally:
        source.stop()
        if dest is not None:
            dest.stop()
        remove(workdir / "dest")
    floor = sha256_cpu_ms_per_mb()
    print(machine_line())
    print(f"{len(refs)} images, {unique / MB:.1f} MB unique, --jobs {args.jobs}, "
          f"medians of {args.runs}; sha256 alone: {floor:.2f} CPU-ms/MB")
    print(f"{'step':<20} {'wall':>8} {'CPU':>8} {'CPU-ms/MB':>10} {'MB/s':>8}")
    for step, r in results.items():
        print(f"{step:<20} {r['median_wall_s']:>6.2f} s {r['median_cpu_s']:>6.2f} s "
              f"{r['cpu_ms_per_mb']:>10.2f} {r['mb_per_s']:>8.1f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "unique_bytes": unique,
                                         "sha256_ms_per_mb": round(floor, 3),
                                         "steps": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
