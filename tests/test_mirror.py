"""End-to-end tests of ``bundler mirror`` (registry to registry) on real registries.

The seeded set (a session registry, read-only) is the source; each test mirrors into
its own destination registry, often through FaultProxy instances that count the
requests on either side and inject faults.
"""

from __future__ import annotations

import hashlib

import httpx

from bundler import mirror
from bundler.sandbox import LocalRegistry, SeededSet

Seeded = tuple[LocalRegistry, SeededSet]
ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def get_manifest(url: str, repository: str, identifier: str) -> tuple[int, bytes, str]:
    """(status, bytes, Content-Type) of GET manifest at a registry's base URL."""
    with httpx.Client(timeout=10) as http:
        r = http.get(f"{url}/v2/{repository}/manifests/{identifier}", headers={"Accept": ACCEPT})
        return r.status_code, r.content, r.headers.get("Content-Type", "")


def get_blob(url: str, repository: str, digest: str) -> bytes:
    with httpx.Client(timeout=10) as http:
        r = http.get(f"{url}/v2/{repository}/blobs/{digest}", follow_redirects=True)
        assert r.status_code == 200, (repository, digest, r.status_code)
        return r.content


def identifier(entry: object) -> str:
    return entry.tag or entry.digest  # type: ignore[attr-defined]


def assert_mirrored(seeded: SeededSet, dest_url: str, prefix: str) -> None:
    """Every manifest of the seeded set (children included) is at the destination byte
    for byte under PREFIX/REPOSITORY, with its media type, and every blob reads back with
    its digest."""
    for entry in seeded.entries:
        repo = f"{prefix}/{entry.repository}" if prefix else entry.repository
        status, raw, media_type = get_manifest(dest_url, repo, identifier(entry))
        assert status == 200, (repo, identifier(entry))
        assert sha(raw) == entry.digest and raw == entry.manifest_bytes
        assert media_type == entry.media_type
        for digest, data in entry.manifests.items():
            assert get_manifest(dest_url, repo, digest)[1] == data
        for digest in entry.blob_sizes:
            assert sha(get_blob(dest_url, repo, digest)) == digest


# -- the library ---------------------------------------------------------------------------
def test_mirror_of_the_seeded_set_keeps_every_digest(
    seeded_registry: Seeded, registry: LocalRegistry
) -> None:
    seeded = seeded_registry[1]
    result = mirror(seeded.references, to=f"{registry.host}/mirror", jobs=4)
    assert [t.name for t in result.targets] == seeded.references
    assert result.skipped_images == []
    assert_mirrored(seeded, registry.url, "mirror")
    # each distinct blob uploaded once (to the first repository needing it), mounted
    # into every other repository of the destination that needs it
    repos: dict[str, set[str]] = {}
    for entry in seeded.entries:
        for digest in entry.blob_sizes:
            repos.setdefault(digest, set()).add(entry.repository)
    assert result.blobs_uploaded == len(repos)
    assert result.bytes_uploaded == seeded.unique_bytes
    assert result.blobs_mounted == sum(len(r) - 1 for r in repos.values())
