"""The sandbox itself works: real registries, auth modes, seeded content, fault proxy."""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bundler.sandbox import (
    FaultProxy,
    LocalRegistry,
    SeededSet,
    TokenServer,
    make_image,
    make_index,
    make_layer,
    push,
    push_big_random_layer_image,
    random_layer,
)
from bundler.sandbox.images import OCI_INDEX, OCI_MANIFEST

ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

Seeded = tuple[LocalRegistry, SeededSet]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- images ---------------------------------------------------------------------------
def test_images_are_deterministic() -> None:
    a = make_layer({"b.txt": b"2", "a.txt": b"1"})
    b = make_layer({"a.txt": b"1", "b.txt": b"2"})
    assert a.digest == b.digest and a.diff_id == b.diff_id and a.digest == sha(a.data)
    assert random_layer(7, 1000).digest == random_layer(7, 1000).digest
    assert random_layer(7, 1000).digest != random_layer(8, 1000).digest
    image = make_image([a])
    assert image.digest == make_image([b]).digest
    config = json.loads(image.config.data)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [a.diff_id]}
    docker = make_image([a], docker=True)
    assert json.loads(docker.manifest_bytes)["layers"][0]["mediaType"].startswith(
        "application/vnd.docker.image.rootfs"
    )
    index = make_index([image])
    desc = json.loads(index.manifest_bytes)["manifests"]
    assert [d["platform"]["os"] for d in desc] == ["linux", "unknown"]
    assert desc[1]["annotations"]["vnd.docker.reference.digest"] == image.digest


# -- seeded registry ------------------------------------------------------------------
def test_seeded_manifests_are_served_exactly(seeded_registry: Seeded) -> None:
    reg, seeded = seeded_registry
    with reg.client() as client:
        for entry in seeded.entries:
            ref = entry.tag or entry.digest
            resp = client.get(
                f"{reg.url}/v2/{entry.repository}/manifests/{ref}", headers={"Accept": ACCEPT}
            )
            assert resp.status_code == 200, entry.reference
            assert resp.content == entry.manifest_bytes
            assert resp.headers["Docker-Content-Digest"] == entry.digest == sha(resp.content)
            assert resp.headers["Content-Type"] == entry.media_type
        for digest, size in seeded.blobs.items():
            repo = next(e.repository for e in seeded.entries if digest in e.blob_sizes)
            head = client.head(f"{reg.url}/v2/{repo}/blobs/{digest}")
            assert head.status_code == 200 and int(head.headers["Content-Length"]) == size
        tags = client.get(f"{reg.url}/v2/apps/web/tags/list").json()["tags"]
        assert "1.0" in tags and "latest" in tags and any(t.endswith(".sig") for t in tags)
        assert client.get(
            f"{reg.url}/v2/apps/pinned/tags/list"
        ).status_code == 404 or not client.get(f"{reg.url}/v2/apps/pinned/tags/list").json().get(
            "tags"
        )
    assert seeded.unique_blob_count < sum(len(e.blob_sizes) for e in seeded.entries)
    assert seeded.unique_bytes < seeded.total_bytes_without_dedup
    assert any("@sha256:" in r for r in seeded.references)


def test_seeded_index_lists_images_and_attestations(seeded_registry: Seeded) -> None:
    reg, seeded = seeded_registry
    entry = seeded.get("multi/arch", "1")
    index = json.loads(entry.manifest_bytes)
    assert index["mediaType"] == OCI_INDEX and len(index["manifests"]) == 4
    platforms = [(d["platform"]["os"], d["platform"]["architecture"]) for d in index["manifests"]]
    assert platforms == [
        ("linux", "amd64"),
        ("unknown", "unknown"),
        ("linux", "arm64"),
        ("unknown", "unknown"),
    ]
    with reg.client() as client:
        for desc in index["manifests"]:
            resp = client.get(
                f"{reg.url}/v2/multi/arch/manifests/{desc['digest']}",
                headers={"Accept": desc["mediaType"]},
            )
            assert resp.status_code == 200 and sha(resp.content) == desc["digest"]
    artifact = json.loads(seeded.entries[-1].manifest_bytes)
    assert artifact["subject"]["digest"] == seeded.get("apps/web", "1.0").digest
    assert "artifactType" in artifact


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_sees_the_same_bytes(seeded_registry: Seeded) -> None:
    _reg, seeded = seeded_registry
    entry = seeded.get("legacy/tool", "latest")
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{entry.reference}"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    assert out == entry.manifest_bytes


# -- registry modes ---------------------------------------------------------------------
def test_registry_counts_requests(registry: LocalRegistry) -> None:
    mark = registry.mark()
    push(registry, "count/me", make_image([random_layer(11, 500)]), tag="v1")
    reqs = registry.requests(since=mark)
    methods = [m for m, _ in reqs]
    assert methods.count("PUT") == 3 and methods.count("POST") == 2
    assert ("PUT", "/v2/count/me/manifests/v1") in reqs
    mark = registry.mark()
    push(registry, "count/me", make_image([random_layer(11, 500)]), tag="v2")
    assert [m for m, _ in registry.requests(since=mark)] == ["HEAD", "HEAD", "PUT"]


def test_htpasswd_registry(registry_factory: Callable[..., LocalRegistry]) -> None:
    reg = registry_factory(htpasswd=("alice", "s3cret"))
    assert httpx.get(reg.url + "/v2/").status_code == 401
    assert httpx.get(reg.url + "/v2/", auth=("alice", "wrong")).status_code == 401
    assert httpx.get(reg.url + "/v2/", auth=("alice", "s3cret")).status_code == 200
    push(reg, "private/app", make_image([random_layer(12, 300)]), tag="1")
    with reg.client() as client:
        assert client.get(reg.url + "/v2/private/app/tags/list").json()["tags"] == ["1"]


def test_tls_registry(registry_factory: Callable[..., LocalRegistry], ca: Any) -> None:
    reg = registry_factory(tls=ca)
    assert reg.url.startswith("https://127.0.0.1:")
    assert (
        reg.cert_dir is not None and (reg.cert_dir / "ca.crt").read_bytes() == ca.cert_pem.bytes()
    )
    assert reg.cert_dir.name == reg.host
    with httpx.Client(verify=ssl.create_default_context(cafile=str(reg.ca_pem))) as good:
        assert good.get(reg.url + "/v2/").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(reg.url + "/v2/")
    push(reg, "tls/app", make_image([random_layer(13, 300)]), tag="1")


def test_proxy_to_tls_upstream(
    registry_factory: Callable[..., LocalRegistry],
    ca: Any,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    reg = registry_factory(tls=ca)
    proxy = fault_proxy(reg.url, upstream_ssl=ssl.create_default_context(cafile=str(reg.ca_pem)))
    image = make_image([random_layer(16, 3000)])
    push(proxy, "tls/proxied", image, tag="1")  # Locations must point at the http proxy
    with reg.client() as client:
        got = client.get(f"{reg.url}/v2/tls/proxied/manifests/1", headers={"Accept": ACCEPT})
        assert got.content == image.manifest_bytes
    assert proxy.count("PUT") == 3


def test_token_registry(registry_factory: Callable[..., LocalRegistry]) -> None:
    with TokenServer({"pusher": "pw", "reader": "rpw"}, permissions={"reader": {"pull"}}) as tokens:
        reg = registry_factory(token=tokens)
        challenge = httpx.get(reg.url + "/v2/")
        assert challenge.status_code == 401
        assert challenge.headers["WWW-Authenticate"].startswith(f'Bearer realm="{tokens.realm}"')
        image = make_image([random_layer(14, 300)])
        push(reg, "tok/app", image, tag="1")
        # the registry orders the actions of a scope at random ("pull,push" / "push,pull")
        assert any(
            user == "pusher" and scope.startswith("repository:tok/app:") and "push" in scope
            for _, _, scopes, user in tokens.requests
            for scope in scopes
        )
        bad = httpx.get(tokens.realm, params={"service": tokens.service}, auth=("pusher", "no"))
        assert bad.status_code == 401
        # the reader may pull but not push
        answer = httpx.get(
            tokens.realm,
            auth=("reader", "rpw"),
            params={"service": tokens.service, "scope": "repository:tok/app:pull,push"},
        ).json()
        headers = {"Authorization": "Bearer " + answer["token"], "Accept": OCI_MANIFEST}
        got = httpx.get(f"{reg.url}/v2/tok/app/manifests/1", headers=headers)
        assert got.status_code == 200 and got.content == image.manifest_bytes
        assert (
            httpx.post(f"{reg.url}/v2/tok/app/blobs/uploads/", headers=headers).status_code == 401
        )
        # OAuth2 refresh token (docker identitytoken)
        refresh = tokens.issue_refresh_token("pusher")
        oauth = httpx.post(
            tokens.realm,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": "test",
                "service": tokens.service,
                "scope": "repository:tok/app:pull",
            },
        ).json()
        got = httpx.get(
            f"{reg.url}/v2/tok/app/manifests/1",
            headers={"Authorization": "Bearer " + oauth["access_token"], "Accept": OCI_MANIFEST},
        )
        assert got.status_code == 200
        assert (
            httpx.post(
                tokens.realm, data={"grant_type": "refresh_token", "refresh_token": "nope"}
            ).status_code
            == 401
        )


def test_token_server_options() -> None:
    with TokenServer(
        {"u": "p"}, anonymous=True, response_fields="access_token", expires_in=2
    ) as tokens:
        body = httpx.get(
            tokens.realm, params={"service": "s", "scope": "repository:a:push,pull"}
        ).json()
        assert "token" not in body and body["expires_in"] == 2
        import jwt

        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["access"] == [{"type": "repository", "name": "a", "actions": ["pull"]}]
        assert claims["aud"] == "s" and claims["exp"] - claims["iat"] == 2
        assert tokens.requests[-1] == ("GET", "s", ("repository:a:push,pull",), None)
        form = httpx.post(
            tokens.realm,
            data={
                "grant_type": "password",
                "username": "u",
                "password": "p",
                "access_type": "offline",
                "service": "s",
                "scope": "repository:a:pull",
            },
        ).json()
        assert form["refresh_token"] in tokens.refresh_tokens and "access_token" in form


# -- proxy ------------------------------------------------------------------------------
def test_proxy_counts_and_faults(
    seeded_registry: Seeded, fault_proxy: Callable[..., FaultProxy]
) -> None:
    reg, seeded = seeded_registry
    proxy = fault_proxy(reg.url)
    layer = max(seeded.get("apps/web", "1.0").item.layers, key=lambda b: b.size)
    blob_url = f"{proxy.url}/v2/apps/web/blobs/{layer.digest}"
    with httpx.Client(timeout=10) as client:
        assert client.get(proxy.url + "/v2/").status_code == 200
        good = client.get(blob_url)
        assert sha(good.content) == layer.digest
        assert proxy.requests[-1] == ("GET", f"/v2/apps/web/blobs/{layer.digest}", 200, layer.size)
        assert client.head(blob_url).headers["Content-Length"] == str(layer.size)

        proxy.corrupt_body(r"/blobs/")
        bad = client.get(blob_url)
        assert len(bad.content) == layer.size and sha(bad.content) != layer.digest
        assert sha(client.get(blob_url).content) == layer.digest  # times=1 used up

        proxy.status(r"/manifests/", 429, {"Retry-After": "1"}, times=2)
        url = f"{proxy.url}/v2/apps/web/manifests/1.0"
        codes = [client.get(url, headers={"Accept": ACCEPT}).status_code for _ in range(3)]
        assert codes == [429, 429, 200]

        proxy.drop_after(r"/blobs/", 1000)
        with pytest.raises(httpx.HTTPError):
            client.get(blob_url)
        assert proxy.requests[-1][3] == 1000

        ranged = client.get(blob_url, headers={"Range": "bytes=0-99"})
        assert ranged.status_code == 206 and len(ranged.content) == 100
        proxy.ignore_range(r"/blobs/", times=1)
        whole = client.get(blob_url, headers={"Range": "bytes=0-99"})
        assert whole.status_code == 200 and len(whole.content) == layer.size

        proxy.slow(r"/blobs/", 200_000, times=1)
        start = time.monotonic()
        assert sha(client.get(blob_url).content) == layer.digest
        assert time.monotonic() - start >= 0.9 * layer.size / 200_000
    assert proxy.count("GET", r"/blobs/") == 7


def test_push_through_proxy(
    registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(registry.url)
    with httpx.Client() as client:
        start = client.post(proxy.url + "/v2/via/proxy/blobs/uploads/")
        assert start.headers["Location"].startswith(proxy.url)
        proxy.relative_location()
        start = client.post(proxy.url + "/v2/via/proxy/blobs/uploads/")
        assert start.headers["Location"].startswith("/v2/via/proxy/blobs/uploads/")
    image = make_image([random_layer(15, 4000)])
    push(proxy, "via/proxy", image, tag="1")  # relative Locations, chunked upstream bodies
    assert proxy.count("PUT", r"/manifests/1$") == 1
    img = push_big_random_layer_image(proxy, "via/big", "1", 3 << 20, seed=5, chunk_size=1 << 20)
    # 3 MiB of random data gzips to a bit more than 3 MiB: four PATCH requests
    assert proxy.count("PATCH", r"^/v2/via/big/blobs/uploads/") == 4
    with httpx.Client() as client:
        blob = client.get(f"{registry.url}/v2/via/big/blobs/{img.layers[0].digest}")
        assert sha(blob.content) == img.layers[0].digest and len(blob.content) == img.layers[0].size
