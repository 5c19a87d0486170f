"""Differential export (``bundler export --since``): bundle size and wall time against
the new blobs alone.

The source is the benchmark set of ``bench_vs_skopeo.py`` (26 tags in 6 repositories,
shared base layers, two multi-arch indexes; about 700 MiB of distinct blobs at
``--scale 1``, cached under the work directory). The base bundle is the whole set
(``bundler export -f images.txt -o base.tar``, not timed). Then two new versions of one
application are pushed, ``apps/web:1.3`` and ``apps/web:1.4``: each the shared
``debian``, ``py312`` and ``pip`` layers plus one new application layer (64 and 72 MiB
at scale 1) and its own config. For each of ``--runs`` rounds (after ``--warmup``
uncounted ones), in alternating order:

* diff: ``bundler export -f images2.txt -o diff.tar --since base.tar.receipt.json``
  (the whole set plus the two new tags, into a new archive);
* download: a plain parallel GET of exactly the new blobs (the diff receipt's blobs
  that the base's does not list, less the two new manifests), 8 at a time, with httpx,
  each written to a file (no fsync), as a separate Python process.

It reports the diff bundle's size against the sum of the new blobs' sizes (target: at
most +1%, the manifests, receipt and tar headers) and the median wall time of the diff
export against the download's (target: at most 1.2x), with PASS/FAIL. MB is 10**6
bytes.

Usage:
    python bench/bench_diff.py --scale 0.1 --runs 1      # a quick check
    python bench/bench_diff.py --runs 3 --json diff.json
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from _harness import (
    MB,
    BlobPusher,
    bundler_command,
    exit_on_sigterm,
    fresh_dir,
    machine,
    machine_line,
    mb,
    measure,
    median,
    remove,
)
from bench_vs_skopeo import LAYERS, SourceSet, _layer_size, seeded_source

from bundler.engine.receipts import read_receipt
from bundler.sandbox import make_image, push

#: the two new versions of apps/web: (tag, new layer name, seed, MiB at scale 1)
NEW_VERSIONS = [("1.3", "web1.3", 161, 64.0), ("1.4", "web1.4", 162, 72.0)]
SHARED = ["debian", "py312", "pip"]

#: the download baseline, run as its own process: GET each blob URL, 8 at a time
DOWNLOAD = """
import sys, httpx
from concurrent.futures import ThreadPoolExecutor
out, urls = sys.argv[1], sys.argv[2:]
def get(i_url):
    i, url = i_url
    with client.stream("GET", url) as r, open(f"{out}/{i}", "wb") as f:
        r.raise_for_status()
        for chunk in r.iter_bytes(1 << 20):
            f.write(chunk)
with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=8)) as client:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(get, enumerate(urls)))
"""


def push_new_versions(source: SourceSet, scale: float) -> list[str]:
    """Push apps/web:1.3 and 1.4 (shared base layers, one new layer each): the names."""
    names = []
    with source.registry.client(timeout=600.0) as http:
        pusher = BlobPusher(source.registry, http)
        shared = {}
        for name in SHARED:
            seed, mib = LAYERS[name]
            shared[name] = pusher.layer(seed, _layer_size(mib, scale))
            pusher.ensure("apps/web", shared[name], seed, _layer_size(mib, scale))
        for tag, _layer, seed, mib in NEW_VERSIONS:
            blob = pusher.layer(seed, _layer_size(mib, scale))
            pusher.ensure("apps/web", blob, seed, _layer_size(mib, scale))
            image = make_image([*(shared[n] for n in SHARED), blob])
            push(source.registry, "apps/web", image, tag=tag, client=http)
            names.append(f"apps/web:{tag}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds (default 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="layer size multiplier (default 1: about 700 MiB of blobs)")
    parser.add_argument("--jobs", type=int, default=8, help="bundler --jobs (default 8)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench-skopeo"),
                        help="work directory; the seeded source is cached here")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    exit_on_sigterm()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    logs = fresh_dir(work / "logs-diff")
    source = seeded_source(work, args.scale)
    try:
        return run(args, work, logs, source)
    finally:
        source.registry.stop()


def run(args: argparse.Namespace, work: Path, logs: Path, source: SourceSet) -> int:
    cli = bundler_command()
    new_names = push_new_versions(source, args.scale)
    images = work / "images-base.txt"
    images.write_text("".join(source.ref(n) + "\n" for n in source.names))
    images2 = work / "images-diff.txt"
    images2.write_text("".join(source.ref(n) + "\n" for n in [*source.names, *new_names]))
    base = work / "base.tar"
    for path in (base, base.with_name("base.tar.receipt.json")):
        remove(path)
    measure([*cli, "export", "-q", "-f", str(images), "-o", str(base)],
            log=logs / "base.log")
    base_receipt = read_receipt(base)
    diff = work / "diff.tar"
    diff_cmd = [*cli, "export", "-q", "-j", str(args.jobs), "-f", str(images2), "-o", str(diff),
                "--since", str(base.with_name("base.tar.receipt.json"))]
    times: dict[str, list[float]] = {"diff": [], "download": []}
    new_blobs: dict[str, int] = {}
    size = 0
    got = work / "download"
    for index in range(args.warmup + args.runs):
        counted = index >= args.warmup
        for step in (["diff", "download"] if index % 2 == 0 else ["download", "diff"]):
            if step == "diff":
                for path in (diff, diff.with_name("diff.tar.receipt.json")):
                    remove(path)
                done = measure(diff_cmd, log=logs / f"diff-{index}.log")
                receipt = read_receipt(diff)
                tops = {i.digest for i in receipt.images}
                new_blobs = {d: s for d, s in receipt.blobs.items()
                             if d not in base_receipt.blobs and d not in tops}
                size = diff.stat().st_size
            else:  # round one begins with a diff, so the new blobs are known
                fresh_dir(got)
                urls = [f"{source.registry.url}/v2/apps/web/blobs/{d}" for d in new_blobs]
                done = measure([sys.executable, "-c", DOWNLOAD, str(got), *urls],
                               log=logs / f"download-{index}.log")
            if counted:
                times[step].append(done.wall_s)
            print(f"round {index + 1}{'' if counted else ' (warm-up)'}: {step} "
                  f"{done.wall_s:.2f} s", file=sys.stderr)
    new_bytes = sum(new_blobs.values())
    diff_s, download_s = median(times["diff"]), median(times["download"])
    size_ratio, time_ratio = size / new_bytes, diff_s / download_s
    print(machine_line())
    print(f"set: {len(source.names)} tags + {len(new_names)} new versions at scale "
          f"{args.scale:g}; base {mb(base.stat().st_size)}")
    print(f"new blobs: {len(new_blobs)}, {mb(new_bytes)}; diff bundle {mb(size)}: "
          f"{size_ratio:.4f}x ({'PASS' if size_ratio <= 1.01 else 'FAIL'}, target <= 1.01x)")
    print(f"diff export {diff_s:.2f} s, download of the new blobs {download_s:.2f} s: "
          f"{time_ratio:.2f}x ({'PASS' if time_ratio <= 1.2 else 'FAIL'}, target <= 1.2x); "
          f"medians of {args.runs} (diff runs: {', '.join(f'{t:.2f}' for t in times['diff'])}; "
          f"download: {', '.join(f'{t:.2f}' for t in times['download'])})")
    if args.json:
        args.json.write_text(json.dumps({
            "when": datetime.now(UTC).isoformat(), "machine": machine(), "scale": args.scale,
            "new_blobs": len(new_blobs), "new_bytes": new_bytes, "diff_bytes": size,
            "size_ratio": size_ratio, "diff_s": times["diff"],
            "download_s": times["download"], "time_ratio": time_ratio,
            "MB": MB}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
