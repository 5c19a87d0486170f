"""The registry client against a real registry behind a FaultProxy: HEAD of manifests,
malformed headers, lying sizes, cut downloads, upload answers without Location."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bundler import TransferError, export_bundle
from bundler.errors import RegistryError, SizeMismatchError
from bundler.events import Tally
from bundler.oci.content import OCI_INDEX
from bundler.oci.digest import Digest
from bundler.registry.client import RegistryClient, TransportOptions
from bundler.registry.uploads import location
from bundler.sandbox import FaultProxy, LocalRegistry, make_image, push, random_layer
from bundler.sandbox.images import sha256_digest

FAST = TransportOptions(retries=1, retry_delay_s=0.01)


def test_head_of_a_missing_manifest_is_one_request(registry: LocalRegistry,
                                                   fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.url)
    with RegistryClient(proxy.host, FAST) as client:
        assert client.resolve("no/such", "1") is None
    assert [(m, p, s) for m, p, s, _ in proxy.requests if p != "/v2/"] == [
        ("HEAD", "/v2/no/such/manifests/1", 404)]


def test_head_answered_405_falls_back_to_get(registry: LocalRegistry,
                                            fault_proxy: Callable[..., FaultProxy]) -> None:
    image = make_image([random_layer(3, 1000)])
    push(registry, "a/b", image, tag="1")
    proxy = fault_proxy(registry.url)
    proxy.status(r"/manifests/1$", 405, method="HEAD")
    with RegistryClient(proxy.host, FAST) as client:
        assert str(client.resolve("a/b", "1")) == image.digest
    assert [(m, s) for m, p, s, _ in proxy.requests if "/manifests/" in p] == [
        ("HEAD", 405), ("GET", 200)]


def test_malformed_docker_content_digest_is_a_registry_error(
        registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]) -> None:
    proxy = fault_proxy(registry.url)
    proxy.status(r"/manifests/1$", 200, {"Docker-Content-Digest": "sha256:nothex"},
                 method="HEAD")
    with RegistryClient(proxy.host, FAST) as client, pytest.raises(RegistryError) as info:
        client.resolve("a/b", "1")
    assert type(info.value) is RegistryError
    assert info.value.registry == proxy.host
    assert str(info.value) == (f"manifest {proxy.host}/a/b:1: {proxy.host} answered a "
                               "malformed Docker-Content-Digest 'sha256:nothex'")


def test_index_child_of_another_size_than_its_descriptor_is_refused(
        registry: LocalRegistry, tmp_path: Path) -> None:
    image = make_image([random_layer(4, 1000)])
    push(registry, "a/b", image, tag=None)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": image.media_type, "digest": image.digest, "size": image.size + 1,
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    response = httpx.put(f"{registry.url}/v2/a/b/manifests/multi", content=index,
                         headers={"Content-Type": OCI_INDEX})
    assert response.status_code == 201
    with pytest.raises(TransferError) as info:
        export_bundle([f"{registry.host}/a/b:multi"], tmp_path / "bundle", options=FAST)
    cause = info.value.cause
    assert isinstance(cause, SizeMismatchError)
    assert (cause.digest, cause.expected, cause.actual) == (image.digest, image.size + 1,
                                                            image.size)
    assert sha256_digest(index) != image.digest


def test_many_cuts_with_progress_between_them_still_finish(
        registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]) -> None:
    layer = random_layer(5, 2 << 20)
    image = make_image([layer])
    push(registry, "a/b", image, tag="1")
    proxy = fault_proxy(registry.url)
    proxy.drop_after(layer.digest, 300_000, times=4)  # each try gets 300,000 bytes further
    received = bytearray()
    with RegistryClient(proxy.host, FAST) as client:  # one retry in a row allowed
        for chunk in client.iter_blob("a/b", Digest.parse(layer.digest)):
            received += chunk
    assert hashlib.sha256(received).hexdigest() == layer.digest[7:]
    statuses = [s for m, p, s, _ in proxy.requests if p.endswith(layer.digest)]
    assert statuses == [200, 206, 206, 206, 206]


def test_cuts_in_a_row_without_progress_fail(registry: LocalRegistry,
                                             fault_proxy: Callable[..., FaultProxy]) -> None:
    layer = random_layer(6, 1 << 20)
    push(registry, "a/b", make_image([layer]), tag="1")
    proxy = fault_proxy(registry.url)
    proxy.drop_after(layer.digest, 300_000, times=1)
    proxy.drop_after(layer.digest, 0, times=None)
    with RegistryClient(proxy.host, FAST) as client, pytest.raises(RegistryError) as info:
        for _ in client.iter_blob("a/b", Digest.parse(layer.digest)):
            pass
    assert type(info.value).__name__ == "TransportError"
    assert proxy.count("GET", layer.digest) == 2  # 300,000 bytes, then a cut without any


def test_failed_blob_download_is_reported(registry: LocalRegistry,
                                          fault_proxy: Callable[..., FaultProxy],
                                          tmp_path: Path) -> None:
    layer = random_layer(7, 10_000)
    push(registry, "a/b", make_image([layer]), tag="1")
    proxy = fault_proxy(registry.url)
    proxy.corrupt_body(layer.digest, times=None)
    tally = Tally()
    with pytest.raises(TransferError):
        export_bundle([f"{proxy.host}/a/b:1"], tmp_path / "bundle", options=FAST, reporter=tally)
    assert tally.failed == 1


def test_upload_answer_without_location_names_the_registry() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:5000/v2/a/b/blobs/uploads/?x=1")
    response = httpx.Response(202, request=request)
    with pytest.raises(RegistryError) as info:
        location(response, "127.0.0.1:5000")
    assert info.value.registry == "127.0.0.1:5000"
    assert str(info.value) == ("POST /v2/a/b/blobs/uploads/: 127.0.0.1:5000 answered no "
                               "Location header")
