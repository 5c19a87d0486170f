"""Pull conformance of ``bundler serve`` (distribution-spec v1.1, the pull side and
content discovery), checked with exact values against the seeded set, for a bundle
directory, a plain .tar and split .tar volumes.

The same endpoints as the OCI conformance suite's pull and content-discovery tests:
``/v2/``, manifests by tag and digest (GET, HEAD), blobs (GET, HEAD, Range), tags/list
with n/last and Link, referrers (with artifactType), _catalog, writes refused with 405.
"""

from __future__ import annotations

import hashlib
import http.client as http_client
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Served, start_serve

from bundler.sandbox import Index, SeededSet

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SIG_TYPE = "application/vnd.dev.bundler.signature.v1"


@pytest.fixture(scope="module", params=["dir", "tar", "split"])
def server(request: pytest.FixtureRequest, seeded_bundles: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    bundle = seeded_bundles[request.param]
    served = start_serve([str(bundle), "-q"], tmp_path_factory.mktemp("serve"))
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def http(server: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(seeded_registry: tuple[object, SeededSet]) -> SeededSet:
    return seeded_registry[1]


def errors(response: httpx.Response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


def raw_get(server: Served, path: str) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (no client normalizing it)."""
    host, port = server.host.rsplit(":", 1)
    conn = http_client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_base_endpoint(http: httpx.Client) -> None:
    response = http.get("/v2/")
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert http.head("/v2/").status_code == 200


def test_every_manifest_by_tag_and_digest(http: httpx.Client, seeded: SeededSet) -> None:
    for entry in seeded.entries:
        refs = [entry.digest] + ([entry.tag] if entry.tag else [])
        for ref in refs:
            response = http.get(f"/v2/{entry.repository}/manifests/{ref}")
            assert response.status_code == 200, (entry.reference, ref)
            assert response.content == entry.manifest_bytes
            assert response.headers["Content-Type"] == entry.media_type
            assert response.headers["Docker-Content-Digest"] == entry.digest
            assert response.headers["Content-Length"] == str(len(entry.manifest_bytes))
            head = http.head(f"/v2/{entry.repository}/manifests/{ref}")
            assert head.status_code == 200
            assert head.content == b""
            assert head.headers["Docker-Content-Digest"] == entry.digest
            assert head.headers["Content-Length"] == str(len(entry.manifest_bytes))
        for digest, data in entry.manifests.items():  # an index's children too
            child = http.get(f"/v2/{entry.repository}/manifests/{digest}")
            assert (child.status_code, child.content) == (200, data)


def test_every_blob_with_its_digest(http: httpx.Client, seeded: SeededSet) -> None:
    for entry in seeded.entries:
        for blob in entry.item.blobs:
            response = http.get(f"/v2/{entry.repository}/blobs/{blob.digest}")
            assert response.status_code == 200
            assert response.content == blob.data
            assert "sha256:" + hashlib.sha256(response.content).hexdigest() == blob.digest
            assert response.headers["Docker-Content-Digest"] == blob.digest
            head = http.head(f"/v2/{entry.repository}/blobs/{blob.digest}")
            assert head.status_code == 200
            assert head.headers["Content-Length"] == str(blob.size)
            assert head.content == b""


def test_blob_ranges(http: httpx.Client, seeded: SeededSet) -> None:
    entry = seeded.get("multi/arch", "1")
    assert isinstance(entry.item, Index)
    blob = max(entry.item.blobs, key=lambda b: b.size)  # 192 KiB: crosses volumes
    url = f"/v2/multi/arch/blobs/{blob.digest}"
    size = blob.size
    cases = {"bytes=0-9": (0, 10), f"bytes=100-{size + 500}": (100, size),
             "bytes=-7": (size - 7, size), "bytes=1000-": (1000, size),
             f"bytes=70000-{150000}": (70000, 150001)}
    for header, (start, stop) in cases.items():
        response = http.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == blob.data[start:stop], header
        assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"
        assert response.headers["Content-Length"] == str(stop - start)
    for header in (f"bytes={size}-", "bytes=9-3", "bytes=a-b", "bytes=0-1,5-6"):
        response = http.get(url, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["Content-Range"] == f"bytes */{size}"


def test_unknown_things_are_404_with_the_spec_codes(http: httpx.Client,
                                                    seeded: SeededSet) -> None:
    missing = "sha256:" + "0" * 64
    response = http.get("/v2/apps/web/manifests/nope")
    assert response.status_code == 404
    assert errors(response) == ["MANIFEST_UNKNOWN"]
    assert errors(http.get(f"/v2/apps/web/manifests/{missing}")) == ["MANIFEST_UNKNOWN"]
    assert http.head(f"/v2/apps/web/manifests/{missing}").status_code == 404
    response = http.get(f"/v2/apps/web/blobs/{missing}")
    assert (response.status_code, errors(response)) == (404, ["BLOB_UNKNOWN"])
    assert http.head(f"/v2/apps/web/blobs/{missing}").status_code == 404
    response = http.get("/v2/no/such/manifests/1")
    assert (response.status_code, errors(response)) == (404, ["NAME_UNKNOWN"])
    assert http.get("/v2/no/such/tags/list").status_code == 404
    # a blob is served only under a repository whose images use it
    tool_layer = seeded.get("legacy/tool", "latest").item.blobs[-1].digest
    response = http.get(f"/v2/base/os/blobs/{tool_layer}")
    assert (response.status_code, errors(response)) == (404, ["BLOB_UNKNOWN"])
    assert http.get(f"/v2/legacy/tool/blobs/{tool_layer}").status_code == 200
    # a manifest of another repository is unknown here too
    tool = seeded.get("legacy/tool", "latest").digest
    assert http.get(f"/v2/base/os/manifests/{tool}").status_code == 404


def test_tags_list_and_pagination(http: httpx.Client, seeded: SeededSet) -> None:
    web = seeded.get("apps/web", "1.0").digest
    fallback = web.replace(":", "-")
    expected = sorted(["1.0", "latest", fallback, fallback + ".sig"])
    response = http.get("/v2/apps/web/tags/list")
    assert response.json() == {"name": "apps/web", "tags": expected}
    assert "Link" not in response.headers
    first = http.get("/v2/apps/web/tags/list", params={"n": 2})
    assert first.json() == {"name": "apps/web", "tags": expected[:2]}
    assert first.headers["Link"] == f'</v2/apps/web/tags/list?n=2&last={expected[1]}>; rel="next"'
    second = http.get("/v2/apps/web/tags/list", params={"n": 2, "last": expected[1]})
    assert second.json()["tags"] == expected[2:]
    assert "Link" not in second.headers
    empty = http.get("/v2/apps/web/tags/list", params={"n": 0})
    assert (empty.json()["tags"], "Link" in empty.headers) == ([], False)
    assert http.get("/v2/apps/web/tags/list", params={"n": "x"}).status_code == 400
    assert http.get("/v2/base/os/tags/list").json() == {"name": "base/os", "tags": ["1", "2"]}
    assert http.get("/v2/apps/pinned/tags/list").json() == {"name": "apps/pinned", "tags": []}


def test_catalog(http: httpx.Client, seeded: SeededSet) -> None:
    names = seeded.repositories
    assert http.get("/v2/_catalog").json() == {"repositories": names}
    page = http.get("/v2/_catalog", params={"n": 4})
    assert page.json() == {"repositories": names[:4]}
    assert page.headers["Link"] == f'</v2/_catalog?n=4&last={names[3].replace("/", "%2F")}>; rel="next"'
    rest = http.get("/v2/_catalog", params={"n": 4, "last": names[3]})
    assert rest.json() == {"repositories": names[4:]}


def test_referrers_api_filter_and_fallback_tag(http: httpx.Client, seeded: SeededSet) -> None:
    web = seeded.get("apps/web", "1.0")
    sig = next(e for e in seeded.entries if e.tag and e.tag.endswith(".sig"))
    descriptor = {"mediaType": sig.media_type, "digest": sig.digest,
                  "size": len(sig.manifest_bytes), "artifactType": SIG_TYPE,
                  "annotations": json.loads(sig.manifest_bytes)["annotations"]}
    response = http.get(f"/v2/apps/web/referrers/{web.digest}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == OCI_INDEX
    assert response.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX,
                               "manifests": [descriptor]}
    assert "OCI-Filters-Applied" not in response.headers
    kept = http.get(f"/v2/apps/web/referrers/{web.digest}", params={"artifactType": SIG_TYPE})
    assert kept.headers["OCI-Filters-Applied"] == "artifactType"
    assert kept.json()["manifests"] == [descriptor]
    dropped = http.get(f"/v2/apps/web/referrers/{web.digest}",
                       params={"artifactType": "application/x-other"})
    assert dropped.json()["manifests"] == []
    none = http.get(f"/v2/base/os/referrers/{seeded.get('base/os', '1').digest}")
    assert (none.status_code, none.json()["manifests"]) == (200, [])
    fallback = http.get(f"/v2/apps/web/manifests/{web.digest.replace(':', '-')}")
    assert fallback.status_code == 200
    assert fallback.headers["Content-Type"] == OCI_INDEX
    assert fallback.json()["manifests"] == [descriptor]
    digest = "sha256:" + hashlib.sha256(fallback.content).hexdigest()
    assert fallback.headers["Docker-Content-Digest"] == digest
    assert http.get("/v2/apps/web/referrers/sha256:zz").status_code == 400


def test_writes_are_405_unsupported(http: httpx.Client, seeded: SeededSet) -> None:
    web = seeded.get("apps/web", "1.0").digest
    blob = seeded.get("apps/web", "1.0").item.blobs[0].digest
    requests = [("POST", "/v2/apps/web/blobs/uploads/"),
                ("POST", f"/v2/apps/new/blobs/uploads/?mount={blob}&from=apps/web"),
                ("PATCH", "/v2/apps/web/blobs/uploads/abc"),
                ("PUT", "/v2/apps/web/blobs/uploads/abc?digest=" + blob),
                ("GET", "/v2/apps/web/blobs/uploads/abc"),
                ("PUT", "/v2/apps/web/manifests/2.0"),
                ("DELETE", f"/v2/apps/web/manifests/{web}"),
                ("DELETE", f"/v2/apps/web/blobs/{blob}")]
    for method, path in requests:
        response = http.request(method, path, content=b"{}")
        assert response.status_code == 405, (method, path)
        assert response.json() == {"errors": [{
            "code": "UNSUPPORTED", "detail": {},
            "message": "this registry is read-only (bundler serve): it answers pulls only"}]}
        assert response.headers["Allow"] == "GET, HEAD"
    assert http.get(f"/v2/apps/web/manifests/{web}").status_code == 200


def test_paths_that_try_to_leave_are_404(server: Served, seeded: SeededSet) -> None:
    web = seeded.get("apps/web", "1.0")
    layer = web.item.blobs[-1].digest
    for path in ("/v2/apps/../base/os/manifests/1", "/v2/apps/web/../../base/os/tags/list",
                 "/v2/apps%2Fweb/manifests/1.0", "/v2/apps%2fweb/blobs/" + layer,
                 "/v2/apps/web/manifests/..", "/v2/apps/web/blobs/..%2F..%2Findex.json",
                 "/v2/apps/web/blobs/../../oci-layout", "/v2/./apps/web/manifests/1.0",
                 "/v2/apps/web/blobs/sha256:..", "/v2/APPS/web/manifests/1.0",
                 "/v2/apps/web/manifests/1.0%00", "/index.json", "/blobs/sha256/" + layer[7:]):
        status, body = raw_get(server, path)
        assert status == 404, path
    assert raw_get(server, "/v2/apps/web/manifests/1.0") == (200, web.manifest_bytes)
