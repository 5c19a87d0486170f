"""Peak memory of ``bundler export`` and ``bundler import`` moving one huge layer.

Starts a local registry holding a single-layer image whose layer is ``--size`` random
bytes (default 1 GiB, pushed as a stream; the seeded registry storage is cached under
the work directory so later runs skip seeding), then runs as subprocesses:

    bundler export REF -o WORKDIR/bundle
    bundler import WORKDIR/bundle --to <second registry>/mem

sampling the RSS of each process tree every 50 ms (and reading the kernel's
``ru_maxrss``). Prints peak RSS, wall time, MB/s and PASS/FAIL against ``--limit-mb``
(default 150). MB is 10**6 bytes. Exit status 1 if a check fails.

Usage:
    python bench/bench_memory.py                 # 1 GiB layer
    python bench/bench_memory.py --size 128MiB   # quick check
"""

from __future__ import annotations

import argparse
import json
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
    mb,
    measure,
    remove,
)

from bundler.cli.options import parse_size
from bundler.sandbox import start_registry
from bundler.sandbox.push import _image_with_layer, _push_blob, _put_manifest

VERSION = "mem-v1"
SEED = 20240101
REPOSITORY = "big/layer"
TAG = "1"


def seeded_source(workdir: Path, size: int):  # type: ignore[no-untyped-def]
    """Start the source registry on cached storage, seeding it first if needed.

    Returns:
        (registry, layer size in bytes).
    """
    regdir = workdir / f"source-{VERSION}-{size}"
    marker = regdir / "seeded.json"
    if marker.exists():
        registry = start_registry(regdir)
        return registry, json.loads(marker.read_text())["layer_size"]
    print(f"seeding a {size / (1 << 20):.0f} MiB random layer (cached in {regdir}) ...",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    registry = fresh_registry(regdir)
    try:
        with registry.client(timeout=600.0) as http, Heartbeat():
            pusher = BlobPusher(registry, http)
            layer = pusher.layer(SEED, size)
            pusher.ensure(REPOSITORY, layer, SEED, size)
            image = _image_with_layer(layer)
            _push_blob(http, registry.url, REPOSITORY, image.config)
            _put_manifest(http, registry.url, REPOSITORY, TAG, image.media_type,
                          image.manifest_bytes)
    except BaseException:
        registry.stop()
        raise
    marker.write_text(json.dumps({"layer_size": layer.size, "digest": layer.digest}))
    print(f"\nseeded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return registry, layer.size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="random layer payload (default 1GiB)")
    parser.add_argument("--workdir", default="/tmp/bundler-bench-memory", type=Path,
                        help="bundle, logs and the cached seeded source "
                             "(default /tmp/bundler-bench-memory)")
    parser.add_argument("--jobs", type=int, default=8, help="bundler --jobs (default 8)")
    parser.add_argument("--limit-mb", type=float, default=150.0, help="RSS limit in MB (default 150)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the bundle and destination registry (source is always cached)")
    args = parser.parse_args()
    exit_on_sigterm()
    size = parse_size(args.size)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = workdir / "bundle"
    remove(bundle)

    source, layer_size = seeded_source(workdir, size)
    try:
        dest = fresh_registry(workdir / "dest")
    except BaseException:
        source.stop()
        raise
    ref = f"{source.host}/{REPOSITORY}:{TAG}"
    cli = bundler_command()
    results = {}
    try:
        steps = [
            ("export", [*cli, "export", ref, "-o", str(bundle), "-q", "--jobs", str(args.jobs)]),
            ("import", [*cli, "import", str(bundle), "--to", f"{dest.host}/mem", "-q",
                        "--jobs", str(args.jobs)]),
        ]
        for name, argv in steps:
            run = measure(argv, log=workdir / f"{name}.log")
            results[name] = {
                "command": " ".join(argv),
                "wall_s": round(run.wall_s, 3),
                "peak_rss_mb": round(run.rss / MB, 1),
                "sampled_tree_rss_mb": round(run.peak_rss / MB, 1),
                "time_maxrss_mb": round(run.max_rss / MB, 1),
                "cpu_s": round(run.cpu_s, 2),
                "mb_per_s": round(layer_size / MB / run.wall_s, 1),
                "pass": run.rss < args.limit_mb * MB,
            }
    finally:
        source.stop()
        dest.stop()
        if not args.keep:
            remove(bundle)
            remove(workdir / "dest")

    print(f"layer: {mb(layer_size)} ({layer_size} bytes), jobs {args.jobs}, "
          f"limit {args.limit_mb:.0f} MB")
    print(f"{'step':<8} {'peak RSS':>10} {'wall':>9} {'CPU':>8} {'MB/s':>8}  result")
    for name, r in results.items():
        verdict = "PASS" if r["pass"] else "FAIL"
        print(f"{name:<8} {r['peak_rss_mb']:>7.1f} MB {r['wall_s']:>7.2f} s "
              f"{r['cpu_s']:>6.2f} s {r['mb_per_s']:>8.1f}  {verdict} (< {args.limit_mb:.0f} MB)")
    if args.json:
        args.json.write_text(json.dumps({"layer_size": layer_size, "jobs": args.jobs,
                                         "limit_mb": args.limit_mb, "steps": results},
                                        indent=2) + "\n")
    return 0 if all(r["pass"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
