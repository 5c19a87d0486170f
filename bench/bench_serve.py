"""``bundler serve`` against the Debian ``docker-registry`` holding the same images, side
by side in one run; then 50 clients at once; then the server's peak RSS on a huge blob.

The set is the benchmark set of ``bench_vs_skopeo.py`` (26 tags in 6 repositories, about
700 MiB of distinct blobs at ``--scale 1``); its seeded registry storage and its bundle
(``bundler export``, a directory) are cached under the work directory. Steps:

* pulls: for each of ``--runs`` rounds (after ``--warmup``), in an order that rotates,
  ``--clients`` concurrent clients each pull the whole set with a loop of
  ``skopeo copy --all docker://HOST/NAME oci:DIR:NAME`` (one OCI layout per client,
  removed after the round) from ``bundler serve BUNDLE`` and from the registry;
  the wall time until the last client ends is the figure.
* manifests: 50 threads at once each ask HEAD then GET of every tag's manifest (26 x 2
  requests each), from both servers; every answer is checked (status, digest).
* memory: the server's RSS is sampled every 50 ms through all of the above, and while
  ``curl`` downloads the ``--big-size`` layer of ``bench_memory.py`` (exported into its
  own bundle, cached) from ``bundler serve``: peak RSS must not grow with blob size.

Prints medians, ratios and PASS/FAIL against the targets of the serve issue (serve at
least as fast as the registry, no error among the 50 clients, peak RSS < 150 MB). MB is
10**6 bytes.

Usage:
    python bench/bench_serve.py --scale 0.1 --runs 1 --big-size 64MiB   # about a minute
    python bench/bench_serve.py --scale 0.25 --runs 3 --json serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
from _harness import MB, bundler_command, mb, median, prepare_workdir, remove
from bench_memory import REPOSITORY as BIG_REPOSITORY
from bench_memory import TAG as BIG_TAG
from bench_memory import seeded_source as big_source
from bench_vs_skopeo import SET_VERSION, seeded_source

from bundler.cli.options import parse_size

SIDES = ("serve", "registry")


class Sampler:
    """Samples a process's RSS every 50 ms in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def reset(self) -> int:
        peak, self.peak = self.peak, 0
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Server:
    """``bundler serve`` run for the benchmark (stopped with SIGTERM)."""

    def __init__(self, cli: list[str], bundle: Path, log: Path) -> None:
        self.argv = [*cli, "serve", str(bundle), "-q", "--listen", "127.0.0.1:0"]
        self._err = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                        stderr=self._err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        self.host = ""
        while not self.host:
            text = log.read_text()
            self.host = next((w.split("://", 1)[1].rstrip(",") for w in text.split()
                              if w.startswith("http://")), "")
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bundler serve did not start: {text}")
            time.sleep(0.05)
        self.sampler = Sampler(self.process.pid)

    def stop(self) -> None:
        self.sampler.stop()
        self.process.terminate()
        self.process.wait(timeout=60)
        self._err.close()


def export_cached(cli: list[str], refs: list[str], bundle: Path, log: Path) -> None:
    """``bundler export`` once; the bundle is kept for later runs."""
    marker = bundle.with_name(bundle.name + ".done")
    if marker.exists():
        return
    remove(bundle)
    images = bundle.with_name(bundle.name + ".txt")
    images.write_text("\n".join(refs) + "\n")
    with open(log, "wb") as out:
        subprocess.run([*cli, "export", "-f", str(images), "-o", str(bundle), "-q"],
                       check=True, stdout=out, stderr=subprocess.STDOUT)
    marker.write_text("")


def pull_all(host: str, names: list[str], clients: int, work: Path, tag: str) -> float:
    """``clients`` concurrent skopeo loops over ``names``; wall seconds."""
    procs, scripts = [], []
    for number in range(clients):
        layout = work / f"pull-{tag}-{number}"
        remove(layout)
        script = work / f"pull-{tag}-{number}.sh"
        script.write_text("set -e\n" + "\n".join(shlex.join([
            "skopeo", "copy", "-q", "--all", "--src-tls-verify=false",
            f"docker://{host}/{name}", f"oci:{layout}:{name.replace('/', '-')}"])
            for name in names) + "\n")
        scripts.append((script, layout))
    os.sync()
    started = time.perf_counter()
    for script, _ in scripts:
        procs.append(subprocess.Popen(["sh", str(script)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
    failures = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            failures.append(err.decode(errors="replace")[-500:])
    wall = time.perf_counter() - started
    for _, layout in scripts:
        remove(layout)
    if failures:
        raise RuntimeError(f"{len(failures)} of {clients} clients failed: {failures[0]}")
    return wall


def manifest_storm(host: str, names: list[str], threads: int = 50) -> dict:
    """``threads`` clients at once, each HEAD + GET of every manifest; counts."""
    with httpx.Client(base_url=f"http://{host}", timeout=60) as probe:
        digests = {}
        for name in names:
            repo, tag = name.rsplit(":", 1)
            digests[name] = probe.head(f"/v2/{repo}/manifests/{tag}", headers=ACCEPT
                                       ).headers["Docker-Content-Digest"]
    barrier = threading.Barrier(threads)

    def client(_: int) -> tuple[int, int]:
        ok = bad = 0
        with httpx.Client(base_url=f"http://{host}", timeout=60) as http:
            barrier.wait()
            for name in names:
                repo, tag = name.rsplit(":", 1)
                for method in ("HEAD", "GET"):
                    try:
                        answer = http.request(method, f"/v2/{repo}/manifests/{tag}",
                                              headers=ACCEPT)
                        good = (answer.status_code == 200 and answer.headers.get(
                            "Docker-Content-Digest") == digests[name])
                    except httpx.HTTPError:
                        good = False
                    ok, bad = ok + good, bad + (not good)
        return ok, bad

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(client, range(threads)))
    wall = time.perf_counter() - started
    ok, bad = sum(r[0] for r in results), sum(r[1] for r in results)
    return {"clients": threads, "requests": ok + bad, "errors": bad, "wall_s": wall}


ACCEPT = {"Accept": ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])}


def big_blob(cli: list[str], args: argparse.Namespace) -> dict | None:
    """Serve the ``--big-size`` layer's bundle and download the layer with curl."""
    size = parse_size(args.big_size) if args.big_size not in ("0", "") else 0
    if not size:
        return None
    cache = args.workdir / "big"
    cache.mkdir(exist_ok=True)
    registry, layer_size = big_source(cache, size)
    bundle = args.workdir / f"big-bundle-{size}"
    try:
        export_cached(cli, [f"{registry.host}/{BIG_REPOSITORY}:{BIG_TAG}"], bundle,
                      args.workdir / "logs" / "export-big.log")
    finally:
        registry.stop()
    server = Server(cli, bundle, args.workdir / "logs" / "serve-big.log")
    try:
        manifest = httpx.get(f"http://{server.host}/v2/{BIG_REPOSITORY}/manifests/{BIG_TAG}",
                             headers=ACCEPT).json()
        layer = max(manifest["layers"], key=lambda d: d["size"])
        url = f"http://{server.host}/v2/{BIG_REPOSITORY}/blobs/{layer['digest']}"
        server.sampler.reset()
        started = time.perf_counter()
        subprocess.run(["curl", "-sf", "-o", os.devnull, url], check=True)
        wall = time.perf_counter() - started
        peak = server.sampler.reset()
    finally:
        server.stop()
    return {"layer_size": layer["size"], "wall_s": wall, "peak_rss": peak,
            "command": shlex.join(server.argv)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench-serve"))
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--big-size", default="1GiB")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    prepare_workdir(args, parser)
    cli = bundler_command()
    source = seeded_source(args.workdir, args.scale)
    logs = args.workdir / "logs"
    try:
        bundle = args.workdir / f"bundle-{SET_VERSION}-scale{args.scale:g}"
        export_cached(cli, [source.ref(n) for n in source.names], bundle, logs / "export.log")
        server = Server(cli, bundle, logs / "serve.log")
        hosts = {"serve": server.host, "registry": source.registry.host}
        times: dict[str, list[float]] = {s: [] for s in SIDES}
        try:
            for index in range(args.warmup + args.runs):
                warm = index < args.warmup
                order = SIDES if index % 2 == 0 else SIDES[::-1]
                for side in order:
                    wall = pull_all(hosts[side], source.names, args.clients, args.workdir, side)
                    if not warm:
                        times[side].append(wall)
                    print(f"  {'warm-up ' if warm else ''}round {index + 1}: {side:<8} "
                          f"{args.clients} clients {wall:7.2f} s", file=sys.stderr, flush=True)
            storm = {side: manifest_storm(hosts[side], source.names) for side in SIDES}
            serve_peak = server.sampler.reset()
            command = shlex.join(server.argv)
        finally:
            server.stop()
    finally:
        source.registry.stop()
    big = big_blob(cli, args)
    med = {s: median(v) for s, v in times.items()}
    ratio = med["serve"] / med["registry"]
    peak = max([serve_peak] + ([big["peak_rss"]] if big else []))
    targets = {
        f"{args.clients} concurrent pulls: serve <= registry": ratio <= 1.0,
        "50 clients asking manifests at once: no error": storm["serve"]["errors"] == 0,
        "serve peak RSS < 150 MB": peak < 150 * MB,
    }
    pulled = source.unique_bytes * args.clients
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB, Python {platform.python_version()}")
    print(f"set: {len(source.names)} tags, {mb(source.unique_bytes)} distinct, scale "
          f"{args.scale:g}; {args.clients} clients each pull the whole set "
          f"({mb(pulled)} per side per round); {args.runs} rounds")
    for side in SIDES:
        print(f"  {side:<8} median {med[side]:7.2f} s ({mb(pulled / med[side])}/s)  runs "
              + ", ".join(f"{t:.2f}" for t in times[side]))
    print(f"  serve / registry {ratio:.2f}")
    for side in SIDES:
        s = storm[side]
        print(f"  manifests, {side:<8} {s['clients']} clients, {s['requests']} requests, "
              f"{s['errors']} errors, {s['wall_s']:.2f} s ({s['requests'] / s['wall_s']:.0f}/s)")
    print(f"  serve peak RSS over the pulls and the 50 clients: {mb(serve_peak)}")
    if big:
        print(f"  serve peak RSS while sending a {mb(big['layer_size'])} blob: "
              f"{mb(big['peak_rss'])} ({big['wall_s']:.2f} s)")
    for name, ok in targets.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        args.json.write_text(json.dumps({
            "scale": args.scale, "clients": args.clients, "times": times, "median": med,
            "ratio": ratio, "manifests": storm, "serve_peak_rss": serve_peak, "big": big,
            "targets": targets, "serve_command": command}, indent=2))


if __name__ == "__main__":
    main()
