"""Does HTTP/2 help blob downloads? httpx over HTTP/1.1 against HTTP/2 on TLS.

Starts a TLS ``docker-registry`` on 127.0.0.1 (certificates from trustme; Go's server
offers ``h2`` by ALPN), pushes one seeded random layer, then downloads it with one
``httpx.Client`` per protocol, alternating, hashing every byte as an export does. Prints
MB/s and the client's CPU seconds per run, and the medians.

    pip install h2                   # httpx's HTTP/2 support
    python bench/bench_http2.py      # 300 MiB layer, 3 rounds

Results: docs/performance.md ("HTTP/2").
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trustme
from _harness import MB, median

from bundler.sandbox import push_big_random_layer_image, start_registry


def download(client: httpx.Client, url: str, digest: str) -> tuple[str, float, float, int]:
    """(HTTP version, seconds, client CPU seconds, bytes) of one verified download."""
    started, cpu = time.perf_counter(), time.process_time()
    hasher, size = hashlib.sha256(), 0
    with client.stream("GET", url) as response:
        response.raise_for_status()
        version = response.http_version
        for chunk in response.iter_bytes():
            hasher.update(chunk)
            size += len(chunk)
    if "sha256:" + hasher.hexdigest() != digest:
        raise RuntimeError(f"{url}: digest mismatch")
    return version, time.perf_counter() - started, time.process_time() - cpu, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300,
                        help="layer size in MiB (default 300)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="downloads per protocol; medians count (default 3)")
    args = parser.parse_args()
    try:
        import h2  # noqa: F401
    except ImportError:
        print("HTTP/2 needs the h2 package: pip install h2", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bundler-bench-h2-") as work:
        registry = start_registry(Path(work) / "registry", tls=trustme.CA())
        try:
            with registry.client() as client:
                image = push_big_random_layer_image(registry, "big/one", "1",
                                                    args.size_mb << 20, seed=3,
                                                    chunk_size=16 << 20, client=client)
            layer = image.layers[0]
            url = f"{registry.url}/v2/big/one/blobs/{layer.digest}"
            rates: dict[str, list[float]] = {}
            cpus: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for http2 in (False, True):
                    with httpx.Client(verify=registry.ssl_context(), http2=http2,
                                      http1=not http2, timeout=60.0) as client:
                        version, wall, cpu, size = download(client, url, layer.digest)
                    rates.setdefault(version, []).append(size / wall)
                    cpus.setdefault(version, []).append(cpu)
                    print(f"{version:<9} {size / wall / MB:7.0f} MB/s  client CPU {cpu:.2f} s "
                          f"for {size / MB:.0f} MB", flush=True)
        finally:
            registry.stop()
    print()
    for version in rates:
        print(f"median {version:<9} {median(rates[version]) / MB:7.0f} MB/s  "
              f"client CPU {median(cpus[version]):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
