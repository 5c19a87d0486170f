"""Flaky links and registry quirks, injected by a proxy in front of a real registry.

Each test ends with the exact digests in the bundle or on the destination, and checks
that no more bytes moved than the fault requires.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bundler import RateLimitError, TransferError, export_bundle, import_bundle
from bundler.registry.client import TransportOptions
from bundler.sandbox import LocalRegistry, make_image, push, random_layer

FAST = TransportOptions(retries=4, retry_delay_s=0.01, retry_cap_s=2.0)
LAYER_SIZE = 3 << 20


@pytest.fixture
def big_image(registry: LocalRegistry):
    """A one-layer image with a ~3 MiB incompressible layer, pushed as big/one:1."""
    image = make_image([random_layer(11, LAYER_SIZE)])
    push(registry, "big/one", image, tag="1")
    return image


def _manifest_digest(base_url: str, name: str) -> str:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
    response = httpx.get(f"{base_url}/v2/{name}", headers={"Accept": accept})
    response.raise_for_status()
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


def _bundle_entries(bundle: Path) -> list[dict]:
    return json.loads((bundle / "index.json").read_text())["manifests"]


def _blob_bytes(proxy, layer_hex: str) -> list[tuple[int, int]]:
    return [(status, n) for method, path, status, n in proxy.requests
            if method == "GET" and path.endswith(layer_hex)]


def test_cut_download_resumes_with_range(registry, big_image, fault_proxy, tmp_path):
    proxy = fault_proxy(registry.url)
    layer = big_image.layers[0]
    proxy.drop_after(layer.digest, 1_000_000)
    bundle = tmp_path / "bundle"
    export_bundle([f"{proxy.host}/big/one:1"], bundle, options=FAST)
    stored = (bundle / "blobs/sha256" / layer.digest.split(":")[1]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == layer.digest.split(":")[1]
    transfers = _blob_bytes(proxy, layer.digest)
    assert transfers[0] == (200, 1_000_000)
    assert transfers[1][0] == 206  # the second request asked for the rest only
    assert sum(n for _, n in transfers) == layer.size  # no byte fetched twice
    assert _bundle_entries(bundle)[0]["digest"] == big_image.digest


def test_cut_download_restarts_cleanly_when_range_is_ignored(registry, big_image, fault_proxy,
                                                              tmp_path):
    proxy = fault_proxy(registry.url)
    layer = big_image.layers[0]
    proxy.drop_after(layer.digest, 1_000_000)
    proxy.ignore_range(layer.digest)
    bundle = tmp_path / "bundle"
    export_bundle([f"{proxy.host}/big/one:1"], bundle, options=FAST)
    transfers = _blob_bytes(proxy, layer.digest)
    assert [s for s, _ in transfers] == [200, 200]
    assert transfers[1][1] == layer.size
    stored = (bundle / "blobs/sha256" / layer.digest.split(":")[1]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == layer.digest.split(":")[1]


def test_429_with_retry_after_and_503_are_retried(registry, big_image, fault_proxy, tmp_path):
    proxy = fault_proxy(registry.url)
    proxy.status(r"/manifests/1$", 429, {"Retry-After": "1"}, b"slow down", method="GET")
    proxy.status(big_image.layers[0].digest, 503, times=2)
    bundle = tmp_path / "bundle"
    export_bundle([f"{proxy.host}/big/one:1"], bundle, options=FAST)
    statuses = [s for _, _, s, _ in proxy.requests]
    assert statuses.count(429) == 1 and statuses.count(503) == 2
    assert _bundle_entries(bundle)[0]["digest"] == big_image.digest


def test_persistent_429_with_plain_text_is_a_rate_limit(registry, big_image, fault_proxy,
                                                         tmp_path):
    proxy = fault_proxy(registry.url)
    proxy.status(r"/manifests/", 429, {"Retry-After": "0"}, b"Too Many Requests", times=None)
    with pytest.raises(TransferError) as info:
        export_bundle([f"{proxy.host}/big/one:1"], tmp_path / "b",
                      options=TransportOptions(retries=2, retry_delay_s=0.01))
    assert isinstance(info.value.cause, RateLimitError)
    assert "answered HTTP 429" in str(info.value) and "rate limited" in str(info.value)
    assert proxy.count("GET", r"/manifests/1$") + proxy.count("HEAD", r"/manifests/1$") == 3


def _export(registry, tmp_path, image_refs) -> Path:
    bundle = tmp_path / "bundle"
    export_bundle(image_refs, bundle, options=FAST)
    return bundle


def test_import_through_relative_locations(registry, registry_factory, big_image, fault_proxy,
                                           tmp_path):
    bundle = _export(registry, tmp_path, [f"{registry.host}/big/one:1"])
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.relative_location()
    result = import_bundle(bundle, to=f"{proxy.host}/m", options=FAST)
    assert result.blobs_uploaded == 2
    assert _manifest_digest(dest.url, "m/big/one/manifests/1") == big_image.digest


def test_an_image_is_tagged_while_another_image_still_uploads(registry, registry_factory,
                                                             big_image, fault_proxy, tmp_path):
    small = make_image([random_layer(12, 2000)])
    push(registry, "small/one", small, tag="1")
    bundle = _export(registry, tmp_path, [f"{registry.host}/big/one:1",
                                          f"{registry.host}/small/one:1"])
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    layer_hex = big_image.layers[0].digest.split(":")[1]
    proxy.status(layer_hex, 503, method="PUT", times=2)  # the big layer waits out two retries
    options = TransportOptions(retries=3, retry_delay_s=0.3, retry_cap_s=1.0)
    import_bundle(bundle, to=f"{proxy.host}/m", options=options, jobs=2)
    assert _manifest_digest(dest.url, "m/big/one/manifests/1") == big_image.digest
    assert _manifest_digest(dest.url, "m/small/one/manifests/1") == small.digest
    seen = [(m, p, s) for m, p, s, _ in proxy.requests]
    layer_puts = [i for i, (m, p, s) in enumerate(seen) if m == "PUT" and layer_hex in p]
    assert [seen[i][2] for i in layer_puts] == [503, 503, 201]
    small_tag = seen.index(("PUT", "/v2/m/small/one/manifests/1", 201))
    big_tag = seen.index(("PUT", "/v2/m/big/one/manifests/1", 201))
    assert small_tag < layer_puts[-1] < big_tag


def test_more_jobs_than_connections_wait_their_turn(registry, fault_proxy, tmp_path):
    """Workers beyond the per-registry connection cap wait for a connection as long as
    the transfers ahead of them take, even longer than the request timeout."""
    images = [make_image([random_layer(100 + i, 100_000)]) for i in range(4)]
    for i, image in enumerate(images):
        push(registry, f"wait/img{i}", image, tag="1")
    proxy = fault_proxy(registry.url)
    proxy.slow(r"/blobs/sha256:", 100_000, method="GET")  # each layer takes about 1 s
    options = TransportOptions(timeout_s=0.5, max_connections=2, retries=0)
    bundle = tmp_path / "bundle"
    result = export_bundle([f"{proxy.host}/wait/img{i}:1" for i in range(4)], bundle,
                           options=options, jobs=4)
    assert result.blobs_downloaded == 8
    assert [e["digest"] for e in _bundle_entries(bundle)] == [i.digest for i in images]


def test_chunked_upload_continues_from_the_registry_offset(registry, registry_factory, big_image,
                                                           fault_proxy, tmp_path):
    bundle = _export(registry, tmp_path, [f"{registry.host}/big/one:1"])
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.status(r"/blobs/uploads/", 503, method="PATCH", times=1)
    options = TransportOptions(retries=3, retry_delay_s=0.01, chunk_size=1 << 20)
    proxy.requests.clear()
    import_bundle(bundle, to=f"{proxy.host}/m", options=options)
    assert _manifest_digest(dest.url, "m/big/one/manifests/1") == big_image.digest
    patches = [s for m, p, s, _ in proxy.requests if m == "PATCH"]
    assert patches.count(503) == 1
    # one status query on the session, and no restart of the whole upload
    assert proxy.count("GET", r"/blobs/uploads/") == 1
    layer_chunks = -(-big_image.layers[0].size // (1 << 20))
    assert patches.count(202) == layer_chunks


def test_registry_refusing_patch_gets_a_monolithic_put(registry, registry_factory, big_image,
                                                       fault_proxy, tmp_path):
    bundle = _export(registry, tmp_path, [f"{registry.host}/big/one:1"])
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.status(r"/blobs/uploads/", 405, method="PATCH", times=None)
    options = TransportOptions(retries=1, retry_delay_s=0.01, chunk_size=1 << 20)
    import_bundle(bundle, to=f"{proxy.host}/m", options=options)
    assert _manifest_digest(dest.url, "m/big/one/manifests/1") == big_image.digest
    puts = [(s, p) for m, p, s, _ in proxy.requests if m == "PUT" and "/blobs/" in p
            and "/bundler-receipts/" not in p]  # the receipt's blobs are small: no PATCH
    assert [s for s, _ in puts] == [201, 201]


def _run_bundler(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bundler.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_export_killed_mid_blob_resumes_where_it_stopped(registry, big_image, fault_proxy,
                                                         tmp_path):
    proxy = fault_proxy(registry.url)
    layer = big_image.layers[0]
    proxy.slow(layer.digest, 1_000_000, times=1)
    bundle = tmp_path / "bundle"
    proc = _run_bundler(["export", f"{proxy.host}/big/one:1", "-o", str(bundle), "-q"])
    partial = bundle / "blobs/sha256" / f".{layer.digest.split(':')[1]}.partial"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 500_000):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = partial.stat().st_size
    assert 0 < kept < layer.size
    assert not (bundle / "index.json").exists()
    proxy.requests.clear()
    done = _run_bundler(["export", f"{proxy.host}/big/one:1", "-o", str(bundle), "-q"])
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    transfers = _blob_bytes(proxy, layer.digest)
    assert transfers == [(206, layer.size - kept)]
    stored = (bundle / "blobs/sha256" / layer.digest.split(":")[1]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == layer.digest.split(":")[1]
    assert not partial.exists()
    assert _bundle_entries(bundle)[0]["digest"] == big_image.digest


def test_import_killed_then_rerun_uploads_each_blob_once(registry, registry_factory, fault_proxy,
                                                         tmp_path):
    images = [make_image([random_layer(20 + i, 400_000), random_layer(40 + i, 300_000)])
              for i in range(4)]
    refs = []
    for i, image in enumerate(images):
        push(registry, f"set/app{i}", image, tag="v1")
        refs.append(f"{registry.host}/set/app{i}:v1")
    bundle = _export(registry, tmp_path, refs)
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.slow(r".", 2_000_000)  # keeps the run long enough to be cut
    proc = _run_bundler(["import", str(bundle), "--to", f"{proxy.host}/m", "-q", "-j", "2"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proxy.count("PUT", r"/blobs/uploads/.*digest=") < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proxy.clear_rules()
    done = _run_bundler(["import", str(bundle), "--to", f"{proxy.host}/m", "-q"])
    out, err = done.communicate(timeout=60)
    assert done.returncode == 0, err
    completed = [
        (path.split("/blobs/")[0], path.split("digest=")[1])
        for method, path, status, _ in proxy.requests
        if method == "PUT" and "digest=" in path and status == 201
    ]
    assert len(completed) == len(set(completed))  # no blob uploaded twice to a repository
    for i, image in enumerate(images):
        assert _manifest_digest(dest.url, f"m/set/app{i}/manifests/v1") == image.digest
