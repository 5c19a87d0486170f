"""Single-file bundles: temporary disk of a piped import, and export time of .tar.zst
against a directory.

Seeds a local registry with the standard set at ``--scale`` (scale 400 is about
280 MB of distinct blobs), then runs as subprocesses:

    (b) bundler export REFS -o WORKDIR/dir            (timed)
        bundler export REFS -o WORKDIR/bundle.tar     (timed)
        bundler export REFS -o WORKDIR/bundle.tar.zst (timed)
        ... ``--rounds`` times, alternating; the medians are compared. PASS when the
        .tar.zst export takes at most ``--max-ratio`` (default 1.3) times the directory's.
    (a) cat WORKDIR/bundle.tar.zst | bundler import - --to <second registry>/pipe

During (a) it samples, every 50 ms, the free space of the work directory's file system
and the size of the destination registry's storage; temporary disk is the drop in free
space not explained by the registry's growth, plus whatever lands in a private TMPDIR.
PASS when the peak stays at or below ``--limit-mib`` (default 64). MB is 10**6 bytes.

Usage:
    python bench/bench_archive.py               # ~280 MB
    python bench/bench_archive.py --scale 100   # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bundler.sandbox import seed_standard_set, start_registry

MB = 1_000_000
MIB = 1 << 20


def tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def bundler() -> list[str]:
    exe = shutil.which("bundler")
    return [exe] if exe else [sys.executable, "-m", "bundler.cli"]


def timed(argv: list[str], **kw: object) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=400,
                        help="size of the seeded image set (seed_standard_set's scale; "
                             "default 400, about 280 MB)")
    parser.add_argument("--limit-mib", type=int, default=64,
                        help="peak temporary disk allowed to a piped import, MiB (default 64)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="exports per format; the median counts (default 3)")
    parser.add_argument("--max-ratio", type=float, default=1.3,
                        help=".tar.zst export time allowed over the directory's (default 1.3)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to work (default: a new temporary directory)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-archive-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    src = start_registry(work / "src")
    dst = start_registry(work / "dst")
    try:
        seeded = seed_standard_set(src, scale=args.scale)
        refs = seeded.references
        print(f"seeded {len(refs)} references, {seeded.unique_bytes / MB:.1f} MB distinct blobs")
        opts = ["--src-tls-verify=false", "-q"]
        times: dict[str, list[float]] = {"dir": [], "bundle.tar": [], "bundle.tar.zst": []}
        for _ in range(args.rounds):
            for name, runs in times.items():
                out = work / name
                (work / "bundle.tar.zst").unlink(missing_ok=True)
                runs.append(timed([*bundler(), "export", *refs, "-o", str(out), *opts]))
                if name != "bundle.tar.zst":  # only the .tar.zst is needed below
                    shutil.rmtree(out) if out.is_dir() else out.unlink()
        dir_s, tar_s, zst_s = (statistics.median(runs) for runs in times.values())
        size = (work / "bundle.tar.zst").stat().st_size
        ratio_ok = zst_s <= args.max_ratio * dir_s
        print(f"(b) export, median of {args.rounds}: to a directory {dir_s:.2f} s; to .tar "
              f"{tar_s:.2f} s ({tar_s / dir_s:.2f}x); to .tar.zst {zst_s:.2f} s "
              f"({zst_s / dir_s:.2f}x, limit {args.max_ratio}x): "
              f"{'PASS' if ratio_ok else 'FAIL'}; archive {size / MB:.1f} MB")
        print("    runs (s): " + "; ".join(f"{name} {' '.join(f'{t:.2f}' for t in runs)}"
                                         for name, runs in times.items()))

        private_tmp = work / "tmp"
        private_tmp.mkdir()
        env = dict(os.environ, TMPDIR=str(private_tmp))
        free0 = shutil.disk_usage(work).free
        reg0 = tree_size(dst.root)
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                used = (free0 - shutil.disk_usage(work).free) - (tree_size(dst.root) - reg0)
                peak = max(peak, used, tree_size(private_tmp))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        command = (f"cat {work / 'bundle.tar.zst'} | {' '.join(bundler())} import - "
                   f"--to {dst.host}/pipe --dest-tls-verify=false -q")
        pipe_s = timed(["sh", "-c", command], env=env)
        done.set()
        sampler.join()
        ok = peak <= args.limit_mib * MIB
        print(f"(a) piped import: {pipe_s:.2f} s, {size / MB / pipe_s:.1f} MB/s; peak "
              f"temporary disk {peak / MIB:.1f} MiB (limit {args.limit_mib} MiB): "
              f"{'PASS' if ok else 'FAIL'}")
        return 0 if ok and ratio_ok else 1
    finally:
        src.stop()
        dst.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
