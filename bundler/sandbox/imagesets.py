"""Registries for image-set tests and benchmarks: many tags, a large catalog.

* :data:`MANY_TAGS`: 70 tags of one repository: semver with and without ``v``,
  pre-releases, tags that are not semver (``latest``, ``1.2``, dates, ``build-NNN``).
* :func:`seed_many_tags` pushes them (a few distinct images, each tagged many times) and
  one manifest by digest only.
* :func:`seed_catalog` pushes one small image to each of many repositories.
* :func:`tag_many` puts one manifest under many tags (PUT of the manifest bytes only).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import httpx

from bundler.sandbox.images import Image, make_image, make_layer
from bundler.sandbox.push import _base_and_client, _HasURL, _put_manifest, push

__all__ = ["MANY_TAGS", "seed_catalog", "seed_many_tags", "tag_many"]

#: The tags of the many-tags repository (70), in no particular order.
MANY_TAGS: tuple[str, ...] = (
    # semver, plain
    "1.0.0", "1.0.1", "1.1.0", "1.2.0", "1.2.1", "1.2.2", "1.2.10", "1.3.0", "1.4.0",
    "1.10.0", "1.11.0", "2.0.0", "2.1.0", "2.10.0", "3.0.0",
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "0.9.0",
    "4.0.0", "4.1.0", "4.2.0", "4.3.0", "4.4.0",
    # semver with a leading v
    "v1.5.0", "v1.6.0", "v2.2.0", "v2.3.0",
    # pre-releases
    "1.2.0-rc.1", "1.2.0-beta.2", "2.0.0-rc.1", "2.0.0-alpha.1", "3.1.0-rc.1",
    "v1.5.0-rc.1", "1.8.0-alpine",
    # not semver
    "latest", "stable", "edge", "nightly", "main", "dev", "1.2", "1", "2", "1.2.3.4",
    "20240101", "2024.01.15", "release-1.0", "sha-abc1234", "1.0.0_hotfix", "3.19-alpine",
    "build-001", "build-002", "build-003", "build-004", "build-005", "build-006",
    "build-007", "build-008", "build-009", "build-010", "build-011", "build-012",
    "build-013", "build-014",
)


def _images(count: int, salt: str) -> list[Image]:
    return [make_image([make_layer({f"{salt}/{i}.txt": f"{salt} {i}\n".encode()})])
            for i in range(count)]


def tag_many(registry: _HasURL | str, repository: str, image: Image, tags: Iterable[str], *,
             client: httpx.Client | None = None, workers: int = 8) -> None:
    """Push ``image`` once, then PUT its manifest under every tag of ``tags``.

    Raises:
        RuntimeError: the registry refused a request.
    """
    tags = list(tags)
    base, http, owned = _base_and_client(registry, client)
    try:
        push(base, repository, image, tag=tags[0] if tags else None, client=http)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda t: _put_manifest(http, base, repository, t, image.media_type,
                                                  image.manifest_bytes), tags[1:]))
    finally:
        if owned:
            http.close()


def seed_many_tags(registry: _HasURL | str, repository: str = "apps/many") -> dict[str, str]:
    """Push :data:`MANY_TAGS` into ``repository`` (four distinct images, so tags differ in
    digest), then one more image by digest only.

    Returns:
        tag -> manifest digest, and ``"@digest-only"`` -> the untagged image's digest.
    """
    images = _images(5, repository)
    digests: dict[str, str] = {}
    for n, image in enumerate(images[:4]):
        tags = MANY_TAGS[n::4]
        tag_many(registry, repository, image, tags)
        digests.update((t, image.digest) for t in tags)
    digests["@digest-only"] = push(registry, repository, images[4], tag=None)
    return digests


def seed_catalog(registry: _HasURL | str, names: Iterable[str], *, tags: Iterable[str] = ("1",),
                 workers: int = 8) -> list[str]:
    """Push one small image into each repository of ``names``, under ``tags``.

    Returns:
        The repository names, sorted (as the catalog lists them).
    """
    names = list(names)
    tags = list(tags)
    base, http, owned = _base_and_client(registry, None)
    try:
        def one(name: str) -> None:
            tag_many(base, name, _images(1, name)[0], tags, client=http, workers=1)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, names))
    finally:
        if owned:
            http.close()
    return sorted(names)
