"""How bundler's costs grow with the number of images: 500, 2,000 and 20,000.

For each size N a source registry is seeded once (cached under the work directory,
keyed by ``SET_VERSION`` and N) with N tags of tiny images: 20 tags per repository,
each image one of 10 shared base layers (4 KiB) plus a layer and a config of its own;
every 25th tag is a two-platform index. Then, on that set, it runs and measures:

* ``export -f list -o DIR``  (registry -> layout directory)
* ``verify DIR`` and ``list DIR``
* ``import DIR --to DEST`` into a registry on empty storage, then the same again
  (a no-op run)
* ``mirror -f list --to DEST`` into a registry on empty storage

Each command's wall time, CPU seconds (user + system, ``/usr/bin/time``) and peak RSS,
per image; for the imports and the mirror the number of requests the destination
registry answered (its access log, not counting the ``GET /v2/`` ping), per image. The report compares the per-image
figures at the largest N with those at the smallest (issue #17: within 1.3x), peak RSS
with 150 MB, and requests per image with 6.5 (import into an empty registry at 2,000)
and 1 (no-op import).

With ``--peers skopeo,crane,regctl`` each peer also exports the list into one layout
and mirrors it image by image into an empty registry (``scale_peers.py``), at the
sizes up to ``--peer-max`` (default 2,000: a loop over 20,000 images takes hours).

Usage:
    python bench/bench_scale.py --sizes 500,2000            # a few minutes
    python bench/bench_scale.py --sizes 500,2000,20000 --json scale.json
    python bench/bench_scale.py --sizes 500 --peers skopeo,crane,regctl --peers-only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import httpx
from _harness import (
    MB,
    Heartbeat,
    bundler_command,
    exit_on_sigterm,
    fresh_dir,
    fresh_registry,
    machine,
    machine_line,
    mb,
    measure,
    remove,
)
from scale_peers import PEER_STEPS, PEERS, ScalePeer, peer_binary

from bundler.sandbox import LocalRegistry, make_image, make_index, start_registry
from bundler.sandbox.images import Blob, Image, Index, make_layer, random_layer

SET_VERSION = "scale-v1"
TAGS_PER_REPOSITORY = 20
BASES = 10
INDEX_EVERY = 25
COMMANDS = ("export", "verify", "list", "import", "no-op import", "mirror")
COUNTED = ("import", "no-op import", "mirror")


def repository_of(i: int) -> str:
    return f"scale/r{i // TAGS_PER_REPOSITORY:05d}"


def name_of(i: int) -> str:
    return f"{repository_of(i)}:t{i % TAGS_PER_REPOSITORY}"


def _image(i: int, bases: list[Blob], architecture: str = "amd64") -> Image:
    own = make_layer({f"app/{i}-{architecture}.txt": f"image {i} {architecture}\n".encode()})
    return make_image([bases[i % BASES], own], architecture=architecture,
                      variant="v8" if architecture == "arm64" else None)


def _upload(http: httpx.Client, base: str, repository: str, blob: Blob) -> None:
    start = http.post(f"{base}/v2/{repository}/blobs/uploads/")
    start.raise_for_status()
    location = urljoin(base + "/", start.headers["Location"])
    sep = "&" if "?" in location else "?"
    http.put(f"{location}{sep}digest={blob.digest.replace(':', '%3A')}", content=blob.data,
             headers={"Content-Type": "application/octet-stream"}).raise_for_status()


def _manifest(http: httpx.Client, base: str, repository: str, ref: str, item: Image | Index
              ) -> None:
    http.put(f"{base}/v2/{repository}/manifests/{ref}", content=item.manifest_bytes,
             headers={"Content-Type": item.media_type}).raise_for_status()


def _seed_repository(registry: LocalRegistry, first: int, count: int, bases: list[Blob]) -> int:
    """Push tags first .. first+count-1 (one repository); return their manifest bytes."""
    repository, base, total = repository_of(first), registry.url, 0
    with httpx.Client(timeout=120.0) as http:
        for blob in bases:  # every base once per repository
            _upload(http, base, repository, blob)
        for i in range(first, first + count):
            tag = f"t{i % TAGS_PER_REPOSITORY}"
            if i % INDEX_EVERY == INDEX_EVERY - 1:
                children = [_image(i, bases, arch) for arch in ("amd64", "arm64")]
                item: Image | Index = make_index(children)  # with attestation manifests
                for child in item.children:
                    for blob in child.blobs:
                        if blob not in bases:
                            _upload(http, base, repository, blob)
                    _manifest(http, base, repository, child.digest, child)
                    total += child.size
            else:
                item = _image(i, bases)
                for blob in item.blobs:
                    if blob not in bases:
                        _upload(http, base, repository, blob)
            _manifest(http, base, repository, tag, item)
            total += item.size
    return total


def seeded_source(workdir: Path, images: int) -> LocalRegistry:
    """The source registry of ``images`` tags on cached storage, seeded when needed."""
    regdir = workdir / f"source-{SET_VERSION}-{images}"
    marker = regdir / "seeded.json"
    if marker.exists():
        return start_registry(regdir)
    print(f"seeding {images} images into {regdir} (cached) ...", end="", file=sys.stderr,
          flush=True)
    started = time.perf_counter()
    registry = fresh_registry(regdir)
    bases = [random_layer(9000 + b, 4096) for b in range(BASES)]
    try:
        with Heartbeat(), ThreadPoolExecutor(8) as pool:
            firsts = range(0, images, TAGS_PER_REPOSITORY)
            list(pool.map(lambda f: _seed_repository(
                registry, f, min(TAGS_PER_REPOSITORY, images - f), bases), firsts))
    except BaseException:
        registry.stop()
        raise
    marker.write_text(json.dumps({"version": SET_VERSION, "images": images}))
    print(f" {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return registry


def run_size(args: argparse.Namespace, cli: list[str], images: int) -> dict:
    """Every command once on the set of ``images`` tags; return its figures."""
    work = args.workdir
    source = seeded_source(work, images)
    listing = work / f"images-{images}.txt"
    listing.write_text("".join(f"{source.host}/{name_of(i)}\n" for i in range(images)))
    bundle = work / "bundle"
    remove(bundle)
    figures: dict[str, dict] = {}

    def step(name: str, argv: list[str], dest: LocalRegistry | None = None,
             env: dict[str, str] | None = None) -> None:
        os.sync()
        since = dest.mark() if dest is not None else 0
        run = measure(argv, log=work / "logs" / f"{name.replace(' ', '-')}-{images}.log",
                      env=env)
        # the /v2/ ping that finds the scheme and the auth is not the images' work
        requests = (sum(1 for _, uri, _ in dest.access_log(since) if uri.rstrip("/") != "/v2")
                    if dest is not None else None)
        figures[name] = {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "peak_rss": run.rss,
                         "requests": requests, "command": shlex.join(argv)}
        extra = f"  {requests / images:.2f} requests/image" if requests is not None else ""
        print(f"  {images:>6} {name:<13} {run.wall_s:8.2f} s  CPU {run.cpu_s:7.2f} s  "
              f"{run.wall_s / images * 1000:6.2f} ms/image  RSS {mb(run.rss)}{extra}",
              file=sys.stderr, flush=True)

    try:
        if not args.peers_only:
            bundler_steps(args, cli, listing, bundle, step)
        if images <= args.peer_max:
            refs = listing.read_text().split()
            for name in args.peers:
                peer_steps(ScalePeer(name, work), refs, source, bundle, step)
    finally:
        source.stop()
        remove(bundle)
    return figures


def peer_steps(peer: ScalePeer, refs: list[str], source: LocalRegistry, layout: Path,
               step: Callable[..., None]) -> None:
    """A peer's export into one layout and its mirror loop into an empty registry."""
    work = layout.parent
    peer.allow_http(source.host)
    remove(layout)
    step(f"{peer.name} export", peer.export(refs, layout), env=peer.env)
    remove(layout)
    dest = fresh_registry(work / "dest")
    try:
        peer.allow_http(dest.host)
        step(f"{peer.name} mirror", peer.mirror(refs, dest.host), dest, env=peer.env)
    finally:
        dest.stop()
        remove(work / "dest")


def bundler_steps(args: argparse.Namespace, cli: list[str], listing: Path, bundle: Path,
                  step_all: Callable[..., None]) -> None:
    """bundler's commands on the set (see the module docstring)."""
    work, jobs = args.workdir, ["--jobs", str(args.jobs)]
    wanted = set(args.only)

    def step(name: str, argv: list[str], dest: LocalRegistry | None = None) -> None:
        if name in wanted:
            measured(name, argv, dest)

    measured = step_all
    step("export", [*cli, "export", "-f", str(listing), "-o", str(bundle), "-q", *jobs])
    step("verify", [*cli, "verify", str(bundle)])
    step("list", [*cli, "list", str(bundle)])
    dest = fresh_registry(work / "dest")
    try:
        into = ["--to", f"{dest.host}/copy", "-q", *jobs]
        step("import", [*cli, "import", str(bundle), *into], dest)
        step("no-op import", [*cli, "import", str(bundle), *into], dest)
    finally:
        dest.stop()
    dest = fresh_registry(work / "dest")
    try:
        step("mirror", [*cli, "mirror", "-f", str(listing), "--to", f"{dest.host}/copy",
                        "-q", *jobs], dest)
    finally:
        dest.stop()
        remove(work / "dest")


def report(results: dict[int, dict], args: argparse.Namespace) -> dict:
    sizes = sorted(results)
    small, large = sizes[0], sizes[-1]
    print()
    print(machine_line() + f", --jobs {args.jobs}")
    print(f"{'command':<15} " + " ".join(f"{f'{n} wall/CPU ms/img':>22}" for n in sizes)
          + f" {'CPU x':>6} {'peak RSS':>10} {'req/img':>8}")
    targets: dict[str, bool] = {}
    names = [c for c in COMMANDS if c in results[small]] + [
        f"{p} {s}" for p in args.peers for s in PEER_STEPS if f"{p} {s}" in results[small]]
    for name in names:
        measured = [n for n in sizes if name in results[n]]
        cells = []
        for n in sizes:
            f = results[n].get(name)
            cells.append(f"{f['wall_s'] / n * 1000:>10.2f} / {f['cpu_s'] / n * 1000:>8.2f}"
                         if f else "-")
        last = measured[-1]
        growth = ((results[last][name]["cpu_s"] / last)
                  / max(results[small][name]["cpu_s"] / small, 1e-9))
        peak = max(results[n][name]["peak_rss"] for n in measured)
        req = results[last][name]["requests"]
        print(f"{name:<15} " + " ".join(f"{c:>22}" for c in cells)
              + f" {growth:>6.2f} {mb(peak):>10} "
              + (f"{req / last:>8.2f}" if req is not None else f"{'':>8}"))
        if name not in COMMANDS:
            continue
        if large > small:
            targets[f"{name}: CPU per image at {large} <= 1.3x at {small}"] = growth <= 1.3
        if name in ("export", "import", "mirror"):
            targets[f"{name}: peak RSS < 150 MB"] = peak < 150 * MB
    if 2000 in results and "import" in results[2000]:
        req = results[2000]["import"]["requests"] / 2000
        targets["import into an empty registry <= 6.5 requests/image at 2000"] = req <= 6.5
    for n in sizes:
        if "no-op import" in results[n]:
            # one HEAD per image, and one request for the whole run: the HEAD of the
            # bundle's registry receipt (bundler-receipts), which finds it there already
            targets[f"no-op import: exactly 1 request/image (+1 for the receipt) at {n}"] = (
                results[n]["no-op import"]["requests"] == n + 1)
    print()
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "set": SET_VERSION, "jobs": args.jobs, "peers": args.peers,
            "results": {str(n): results[n] for n in sizes}, "targets": targets}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,2000,20000",
                        help="image counts, comma-separated (default 500,2000,20000)")
    parser.add_argument("--jobs", type=int, default=8, help="bundler --jobs (default 8)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench-scale"),
                        help="logs, bundles and the cached seeded sources "
                             "(default /tmp/bundler-bench-scale)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--peers", default="",
                        help="peers to run too, comma-separated: skopeo, crane, regctl")
    parser.add_argument("--peer-max", type=int, default=2000,
                        help="run the peers only at sizes up to this (default 2000)")
    parser.add_argument("--peers-only", action="store_true",
                        help="run only the peers, not bundler's commands")
    parser.add_argument("--only", default=",".join(COMMANDS),
                        help="bundler's commands to run, comma-separated (default all; "
                             "the export runs whenever another needs its bundle)")
    args = parser.parse_args()
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    if not args.only or any(c not in COMMANDS for c in args.only):
        parser.error(f"--only: some of {', '.join(COMMANDS)}")
    if set(args.only) & {"verify", "list", "import", "no-op import"}:
        args.only.append("export")
    args.peers = [p for p in args.peers.split(",") if p.strip()]
    for name in args.peers:
        if name not in PEERS:
            parser.error(f"--peers: {name!r} is none of {', '.join(PEERS)}")
        if peer_binary(name) is None:
            parser.error(f"--peers: {name} is not installed here")
    if args.peers_only and not args.peers:
        parser.error("--peers-only needs --peers")
    exit_on_sigterm()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    fresh_dir(args.workdir / "logs")
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or min(sizes) < 1:
        parser.error("--sizes: positive image counts, comma-separated")
    cli = bundler_command()
    results = {n: run_size(args, cli, n) for n in sizes}
    doc = report(results, args)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(doc["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
