"""Registry behaviour seen in the field: expired tokens, Retry-After as an HTTP date,
registries that refuse a large monolithic upload, kills at several points."""

from __future__ import annotations

import email.utils
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

from bundler import export_bundle, import_bundle
from bundler.registry.client import TransportOptions
from bundler.registry.credentials import Credentials
from bundler.registry.transport import _retry_after_s
from bundler.sandbox import TokenServer, make_image, push, random_layer

FAST = TransportOptions(retries=3, retry_delay_s=0.01, retry_cap_s=2.0)


def test_retry_after_as_seconds_or_http_date() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/v2/")
    assert _retry_after_s(httpx.Response(429, headers={"Retry-After": "7"},
                                         request=request)) == 7.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    waited = _retry_after_s(httpx.Response(503, headers={"Retry-After": when},
                                           request=request))
    assert waited is not None and 25 <= waited <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _retry_after_s(httpx.Response(503, headers={"Retry-After": past},
                                         request=request)) == 0.0
    assert _retry_after_s(httpx.Response(503, headers={"Retry-After": "soon"},
                                         request=request)) is None


def test_a_401_on_an_expired_token_gets_a_new_token_once(registry_factory, fault_proxy,
                                                         tmp_path: Path) -> None:
    with TokenServer({"alice": "pw"}) as tokens:
        registry = registry_factory(token=tokens)
        image = make_image([random_layer(61, 200_000)])
        push(registry, "tok/app", image, tag="1")
        proxy = fault_proxy(registry.url)
        challenge = (f'Bearer realm="{tokens.realm}",service="{tokens.service}",'
                     f'scope="repository:tok/app:pull",error="invalid_token"')
        proxy.status(image.layers[0].digest, 401, {"WWW-Authenticate": challenge},
                     b'{"errors":[{"code":"UNAUTHORIZED"}]}', method="GET", times=1)
        tokens.requests.clear()
        options = TransportOptions(credentials=Credentials("alice", "pw"), retries=1,
                                   retry_delay_s=0.01)
        bundle = tmp_path / "b"
        export_bundle([f"{proxy.host}/tok/app:1"], bundle, options=options)
        stored = (bundle / "blobs/sha256" / image.layers[0].digest[7:]).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == image.layers[0].digest[7:]
        assert len(tokens.requests) == 2  # the first token, and one more after the 401
        statuses = [s for m, p, s, _ in proxy.requests if p.endswith(image.layers[0].digest)]
        assert statuses == [401, 200]


def test_a_registry_refusing_a_large_monolithic_put_gets_chunks(registry, registry_factory,
                                                                 fault_proxy, tmp_path: Path):
    image = make_image([random_layer(62, 600_000)])
    push(registry, "mono/app", image, tag="1")
    bundle = tmp_path / "b"
    export_bundle([f"{registry.host}/mono/app:1"], bundle, options=FAST)
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    proxy.status(r"/blobs/uploads/.*digest=", 413, method="PUT", times=1)
    options = TransportOptions(retries=1, retry_delay_s=0.01, chunk_size=1 << 20)
    import_bundle(bundle, to=f"{proxy.host}/m", options=options)
    response = httpx.get(f"{dest.url}/v2/m/mono/app/manifests/1",
                         headers={"Accept": image.media_type})
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == image.digest
    requests = [(m, s) for m, p, s, _ in proxy.requests if "/blobs/uploads/" in p]
    assert ("PUT", 413) in requests and ("PATCH", 202) in requests


@pytest.mark.parametrize("kept_at_least", [200_000, 900_000, 1_600_000])
def test_export_killed_at_several_points_resumes_exactly(registry, fault_proxy, tmp_path: Path,
                                                         kept_at_least: int) -> None:
    image = make_image([random_layer(63, 2_000_000)])
    push(registry, "kill/app", image, tag="1")
    layer = image.layers[0]
    proxy = fault_proxy(registry.url)
    proxy.slow(layer.digest, 2_000_000, times=1)
    bundle = tmp_path / "bundle"
    args = [sys.executable, "-m", "bundler.cli", "export", f"{proxy.host}/kill/app:1",
            "-o", str(bundle), "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = bundle / "blobs/sha256" / f".{layer.digest[7:]}.partial"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
            not partial.exists() or partial.stat().st_size < kept_at_least):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert partial.exists(), err.decode()
    kept = partial.stat().st_size
    assert kept >= kept_at_least and not (bundle / "index.json").exists()
    # the proxy logs the killed download once it notices (it may have sent it all)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
            m == "GET" and p.endswith(layer.digest) for m, p, _, _ in proxy.requests):
        time.sleep(0.02)
    proxy.requests.clear()
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = [(s, n) for m, p, s, n in proxy.requests if m == "GET" and p.endswith(layer.digest)]
    assert got == [(206, layer.size - kept)] if kept < layer.size else got == [], (got, kept)
    stored = (bundle / "blobs/sha256" / layer.digest[7:]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == layer.digest[7:]
    index = json.loads((bundle / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.digest]


def test_an_interrupted_chunked_upload_continues_in_the_next_run(registry, registry_factory,
                                                                 fault_proxy, tmp_path: Path):
    image = make_image([random_layer(64, 3_000_000)])
    push(registry, "resume/app", image, tag="1")
    bundle = tmp_path / "b"
    export_bundle([f"{registry.host}/resume/app:1"], bundle, options=FAST)
    dest = registry_factory()
    proxy = fault_proxy(dest.url)
    # the fifth PATCH fails, and so does every one after it: the first run gives up
    proxy.add_rule("status", r"/blobs/uploads/", method="PATCH", times=None, skip=4,
                   code=500, headers={}, body=b"")
    args = [sys.executable, "-m", "bundler.cli", "import", str(bundle), "--to",
            f"{proxy.host}/m", "--chunk-size", "256KiB", "--retries", "0", "-q"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert first.returncode == 1 and "HTTP 500" in first.stderr
    journal = json.loads((tmp_path / "state" / "uploads.json").read_text())
    key = f"{proxy.host}/m/resume/app@{image.layers[0].digest}"
    # the upload session, and the repository the run found new (not new any more: the
    # next run asks about its blobs)
    assert sorted(journal) == sorted([key, f"unfinished:{proxy.host}/m/resume/app"])
    proxy.clear_rules()
    proxy.requests.clear()
    second = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    chunks = -(-image.layers[0].size // (256 << 10))
    patches = [s for m, p, s, _ in proxy.requests if m == "PATCH"]
    assert patches == [202] * (chunks - 4)  # the four acknowledged chunks are not sent again
    assert proxy.count("GET", r"/blobs/uploads/") == 1  # asked where the session stood
    response = httpx.get(f"{dest.url}/v2/m/resume/app/manifests/1",
                         headers={"Accept": image.media_type})
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == image.digest
    assert json.loads((tmp_path / "state" / "uploads.json").read_text()) == {}


def test_verify_tells_how_to_repair_a_corrupt_blob(registry, tmp_path: Path) -> None:
    from bundler import verify_bundle

    image = make_image([random_layer(65, 50_000)])
    push(registry, "repair/app", image, tag="1")
    bundle = tmp_path / "b"
    export_bundle([f"{registry.host}/repair/app:1"], bundle, options=FAST)
    layer = bundle / "blobs/sha256" / image.layers[0].digest[7:]
    data = bytearray(layer.read_bytes())
    data[100] ^= 1
    layer.write_bytes(bytes(data))
    problems = verify_bundle(bundle).problems
    assert len(problems) == 1
    assert problems[0].startswith(f"{registry.host}/repair/app:1: digest mismatch")
    assert problems[0].endswith(f"; delete {layer} and run the export again to fetch it anew")
    layer.unlink()
    export_bundle([f"{registry.host}/repair/app:1"], bundle, options=FAST)
    assert verify_bundle(bundle).ok
