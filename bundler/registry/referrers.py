"""Referrers in a registry: the OCI 1.1 referrers API, the referrers tag schema, and
the cosign tag scheme.

A *referrer* is a manifest that points at another one, its *subject*: a signature, an
attestation, an SBOM. Registries keep them in one of three ways:

- the referrers API (``GET /v2/<name>/referrers/<digest>``, an image index of
  descriptors, filtered by ``artifactType`` when the registry can);
- the referrers tag schema: when a registry does not serve the API, the clients that
  push a manifest with a ``subject`` keep an index of its referrers under the tag
  ``<alg>-<hex>`` (:func:`fallback_tag`);
- the cosign tag scheme: tags ``sha256-<hex>.sig``, ``.att`` and ``.sbom``
  (:func:`cosign_tags`) in the subject's repository.

Spec: distribution-spec v1.1 "Listing Referrers", "Referrers Tag Schema", "Pushing
Manifests with Subject"; cosign ``specs/SIGNATURE_SPEC.md`` "Tag-based Discovery".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence

from ..errors import ManifestError, NotFoundError, RegistryError
from ..oci.content import OCI_INDEX, Descriptor, Index, Manifest, parse_manifest
from ..oci.digest import Digest
from ..oci.limits import LISTED_LIMIT
from .client import RegistryClient

__all__ = [
    "COSIGN_SUFFIXES",
    "ReferrersApi",
    "cosign_tags",
    "fallback_tag",
    "list_referrers",
    "merge_fallback_index",
    "read_fallback_index",
    "referrer_descriptor",
]

#: The cosign tag scheme's suffixes: signatures, attestations, SBOMs.
COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
#: The header a registry that serves the referrers API sets when it filtered.
FILTERS_APPLIED = "OCI-Filters-Applied"


def fallback_tag(digest: Digest) -> str:
    """The referrers tag schema's tag of a subject: ``<alg>-<hex>``, cut to 128
    characters (the tag grammar's limit).

    Spec: distribution-spec v1.1 "Referrers Tag Schema".
    """
    return f"{digest.algorithm}-{digest.hex}"[:128]


def cosign_tags(digest: Digest) -> list[str]:
    """The cosign tag scheme's tags of a subject: ``sha256-<hex>.sig``, ``.att``,
    ``.sbom``, in that order."""
    return [f"{fallback_tag(digest)}{suffix}" for suffix in COSIGN_SUFFIXES]


class ReferrersApi:
    """Which registries serve the referrers API, learnt once per registry.

    A registry that serves it never answers 404 (distribution-spec v1.1: "MUST NOT
    return a 404"); one that does not is asked no more in this run. Thread-safe.
    """

    def __init__(self) -> None:
        self._absent: set[str] = set()
        self._lock = threading.Lock()

    def absent(self, registry: str) -> bool:
        """True once ``registry`` answered 404 to a referrers request."""
        with self._lock:
            return registry in self._absent

    def mark_absent(self, registry: str) -> None:
        """Record that ``registry`` does not serve the referrers API."""
        with self._lock:
            self._absent.add(registry)


def list_referrers(client: RegistryClient, repository: str, subject: Digest, *,
                   artifact_types: Sequence[str] = (),
                   api: ReferrersApi | None = None) -> list[Descriptor] | None:
    """The referrers of ``subject`` by the referrers API, or None if the registry does
    not serve it (a 404; remembered in ``api``, which then spares the request).

    Args:
        client: the registry's client.
        repository: the subject's repository.
        subject: the subject's digest.
        artifact_types: keep only these artifact types (sent as ``artifactType``; also
            filtered here when the registry did not say ``OCI-Filters-Applied``).
        api: what is known of the registries; updated.

    Returns:
        The descriptors of the referrers (media type, digest, size, artifact type,
        annotations), every page followed (``Link``), or None.

    Raises:
        RegistryError: any other error answer. ManifestError: the answer is not an
        index.

    Spec: distribution-spec v1.1 "Listing Referrers".
    """
    if api is not None and api.absent(client.registry):
        return None
    what = f"referrers of {client.registry}/{repository}@{subject}"
    params = [("artifactType", t) for t in artifact_types]
    path: str | None = f"/v2/{repository}/referrers/{subject}"
    found: list[Descriptor] = []
    seen: set[Digest] = set()
    asked: set[str] = set()
    while path:
        asked.add(path)
        response = client.request("GET", path, what=what, ok=(200, 404),
                                  headers={"Accept": OCI_INDEX},
                                  params=params if "?" not in path else None)
        if response.status_code == 404:
            if api is not None:
                api.mark_absent(client.registry)
            return None
        item = _parse_index(response.content, what)
        filtered = "artifacttype" in response.headers.get(FILTERS_APPLIED, "").lower()
        fresh = [d for d in item.manifests if d.digest not in seen]
        seen.update(d.digest for d in fresh)
        found.extend(d for d in fresh
                     if filtered or not artifact_types or d.artifact_type in artifact_types)
        if len(seen) > LISTED_LIMIT:
            raise RegistryError(f"{what}: more than {LISTED_LIMIT:,} referrers, the most "
                                "bundler reads from one listing", registry=client.registry)
        link = response.links.get("next", {}).get("url")
        # never another host, and never a page again or after a page of nothing new
        # (a Link to itself would loop for ever)
        path = client._next_page(response, link, what) if link and fresh else None
        if path in asked:
            path = None
    return found


def read_fallback_index(client: RegistryClient, repository: str,
                        subject: Digest) -> Index | None:
    """The referrers tag schema's index of ``subject`` (tag :func:`fallback_tag`), or
    None when there is none.

    Raises:
        RegistryError: an error answer other than 404. ManifestError: the tag holds
        something else than an index.

    Spec: distribution-spec v1.1 "Referrers Tag Schema".
    """
    tag = fallback_tag(subject)
    try:
        raw, media_type, digest = client.get_manifest(repository, tag)
    except NotFoundError:
        return None
    item = parse_manifest(raw, media_type, digest=digest)
    if not isinstance(item, Index):
        raise ManifestError(f"{client.registry}/{repository}:{tag} is not an index of "
                            "referrers")
    return item


def referrer_descriptor(item: Manifest | Index) -> Descriptor:
    """A referrer's descriptor as the referrers API lists it: its media type, digest and
    size, ``artifactType`` (the manifest's, else its config's media type) and the
    manifest's annotations.

    Spec: distribution-spec v1.1 "Listing Referrers" (the descriptors' fields).
    """
    artifact_type = item.artifact_type
    if not artifact_type and isinstance(item, Manifest) and item.config is not None:
        artifact_type = item.config.media_type
    return Descriptor(media_type=item.media_type, digest=item.digest, size=len(item.raw),
                      artifact_type=artifact_type or None,
                      annotations=dict(item.annotations))


def merge_fallback_index(client: RegistryClient, repository: str, subject: Digest,
                         referrers: Iterable[Descriptor]) -> bool:
    """Add ``referrers`` to the subject's referrers tag schema index, keeping every
    descriptor already there (another tool's referrers stay), and PUT it if it changed.

    The existing index's bytes are kept as they are when nothing is missing; else the
    new index lists the existing descriptors as found (every field kept), then the new
    ones.

    Args:
        client: the destination registry's client.
        repository: the subject's repository.
        subject: the subject's digest.
        referrers: descriptors as :func:`referrer_descriptor` makes them.

    Returns:
        True if the index was written.

    Raises:
        RegistryError: the registry refused; ManifestError: the tag holds no index.

    Spec: distribution-spec v1.1 "Referrers Tag Schema", "Pushing Manifests with
    Subject" (the client maintains the index).
    """
    existing = read_fallback_index(client, repository, subject)
    kept: list[dict] = []
    have: set[Digest] = set()
    if existing is not None:
        kept = [dict(d.raw) if d.raw else d.to_dict() for d in existing.manifests]
        have = {d.digest for d in existing.manifests}
    added = [d for d in _unique(referrers) if d.digest not in have]
    if not added:
        return False
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": kept + [d.to_dict() for d in added]}
    raw = json.dumps(document, separators=(",", ":")).encode()
    client.put_manifest(repository, fallback_tag(subject), raw, OCI_INDEX)
    return True


def _unique(descriptors: Iterable[Descriptor]) -> list[Descriptor]:
    seen: dict[Digest, Descriptor] = {}
    for descriptor in descriptors:
        seen.setdefault(descriptor.digest, descriptor)
    return list(seen.values())


def _parse_index(raw: bytes, what: str) -> Index:
    try:
        item = parse_manifest(raw, OCI_INDEX)
    except ManifestError as exc:
        raise ManifestError(f"{what}: {exc}") from exc
    if not isinstance(item, Index):
        raise ManifestError(f"{what}: the registry answered something else than an index")
    return item
