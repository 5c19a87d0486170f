"""The slow-link proxy of the benchmarks: bytes pass unchanged, a round trip costs more."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from bundler.sandbox import LocalRegistry, make_image, push, random_layer
from bundler.sandbox.latency import LatencyProxy

DELAY_S = 0.025


def test_blob_passes_unchanged_and_each_request_waits_a_round_trip(
        registry: LocalRegistry) -> None:
    layer = random_layer(17, 3 * 1024 * 1024)  # larger than one read of the relay
    image = make_image([layer])
    push(registry, "slow/link", image, tag="v1")
    with LatencyProxy(registry.host, DELAY_S) as proxy, \
            httpx.Client(base_url=f"http://{proxy.host}", timeout=30) as http:
        started = time.perf_counter()
        assert http.get("/v2/").status_code == 200  # connect + one request
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(4):  # the same connection: one round trip each
            head = http.head("/v2/slow/link/manifests/v1",
                             headers={"Accept": image.media_type})
            assert head.headers["Docker-Content-Digest"] == image.digest
        four = time.perf_counter() - started
        body = http.get(f"/v2/slow/link/blobs/{layer.digest}").content
        assert proxy.connections == 1
    assert "sha256:" + hashlib.sha256(body).hexdigest() == layer.digest
    assert body == layer.data
    # loose lower bounds only: the handshake's and the request's round trips, then four
    assert first >= 4 * DELAY_S * 0.9
    assert four >= 4 * 2 * DELAY_S * 0.9


def test_upload_through_the_proxy_lands_in_the_registry(registry: LocalRegistry) -> None:
    layer = random_layer(18, 1024 * 1024)
    with LatencyProxy(registry.host, DELAY_S) as proxy, \
            httpx.Client(base_url=f"http://{proxy.host}", timeout=30) as http:
        start = http.post("/v2/slow/up/blobs/uploads/")
        assert start.status_code == 202
        location = start.headers["Location"]
        sep = "&" if "?" in location else "?"
        put = http.put(f"{location}{sep}digest={layer.digest}", content=layer.data,
                       headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201
    direct = httpx.get(f"{registry.url}/v2/slow/up/blobs/{layer.digest}", timeout=30)
    assert direct.content == layer.data


def test_stop_closes_open_connections(registry: LocalRegistry) -> None:
    proxy = LatencyProxy(registry.host, DELAY_S).start()
    http = httpx.Client(base_url=f"http://{proxy.host}", timeout=5)
    assert http.get("/v2/").status_code == 200
    proxy.stop()
    proxy.stop()  # idempotent
    with pytest.raises(httpx.TransportError):
        http.get("/v2/")
    http.close()


@pytest.mark.parametrize("upstream", ["nohost", "127.0.0.1:x", ":5000"])
def test_bad_upstream(upstream: str) -> None:
    with pytest.raises(ValueError, match="bad upstream"):
        LatencyProxy(upstream, DELAY_S)
