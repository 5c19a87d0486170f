"""Push sandbox images to a registry with plain httpx (independent of bundler's client).

Distribution-spec "Pushing blobs" (monolithic POST + PUT ?digest=, or chunked PATCH for
big streamed blobs, HEAD to skip existing blobs) and "Pushing manifests" (PUT with
Content-Type). :class:`SandboxAuth` answers Basic and Bearer (token) challenges.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import ssl
import tarfile
import zlib
from collections.abc import Generator, Iterator
from typing import Any, Protocol
from urllib.parse import urljoin

import httpx

from bundler.sandbox.images import (
    CREATED,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Blob,
    Image,
    Index,
    _config_json,
    sha256_digest,
)

__all__ = ["SandboxAuth", "push", "push_big_random_layer_image", "stream_random_layer"]


class _HasURL(Protocol):
    url: str


class SandboxAuth(httpx.Auth):
    """httpx auth flow: Basic credentials, and the 401 -> token -> retry Bearer exchange.

    Args:
        username: user name (None for anonymous token requests).
        password: password.
        verify: TLS verification for the token server request.
    """

    def __init__(
        self, username: str | None, password: str | None, verify: ssl.SSLContext | bool = True
    ) -> None:
        self.username = username
        self.password = password
        self.verify = verify
        self._bearer: str | None = None
        self._basic_ok = True

    def _basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send with the cached token; on a Bearer challenge fetch a token and retry once."""
        if self._bearer:
            request.headers["Authorization"] = "Bearer " + self._bearer
        elif self.username is not None and self._basic_ok:
            request.headers["Authorization"] = self._basic()
        response = yield request
        if response.status_code != 401:
            return
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer "):
            self._basic_ok = False
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            query: list[tuple[str, str]] = []
            if "service" in params:
                query.append(("service", params["service"]))
            for scope in params.get("scope", "").split(" "):
                if scope:
                    query.append(("scope", scope))
            auth = (self.username, self.password) if self.username is not None else None
            with httpx.Client(verify=self.verify, timeout=30.0) as tok:
                answer = tok.get(params["realm"], params=query, auth=auth)
            if answer.status_code != 200:
                return
            body = answer.json()
            self._bearer = body.get("token") or body.get("access_token")
            request.headers["Authorization"] = "Bearer " + str(self._bearer)
            yield request
        elif (
            challenge.lower().startswith("basic ")
            and self.username is not None
            and "Authorization" not in request.headers
        ):
            request.headers["Authorization"] = self._basic()
            yield request


def _base_and_client(
    registry: _HasURL | str, client: httpx.Client | None
) -> tuple[str, httpx.Client, bool]:
    base = registry if isinstance(registry, str) else registry.url
    if client is not None:
        return base.rstrip("/"), client, False
    make = getattr(registry, "client", None)
    new = make() if callable(make) else httpx.Client(timeout=30.0)
    return base.rstrip("/"), new, True


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 300:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    return response


def _with_digest(location: str, digest: str) -> str:
    """Append ``digest=`` to an upload URL, keeping its query (``_state`` etc.)."""
    return location + ("&" if "?" in location else "?") + "digest=" + digest.replace(":", "%3A")


def _push_blob(client: httpx.Client, base: str, repository: str, blob: Blob) -> None:
    head = client.head(f"{base}/v2/{repository}/blobs/{blob.digest}")
    if head.status_code == 200:
        return
    start = _check(client.post(f"{base}/v2/{repository}/blobs/uploads/"), "start upload")
    location = urljoin(base + "/", start.headers["Location"])
    _check(
        client.put(
            _with_digest(location, blob.digest),
            content=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        ),
        f"upload {blob.digest}",
    )


def _put_manifest(
    client: httpx.Client, base: str, repository: str, ref: str, media_type: str, data: bytes
) -> str:
    response = _check(
        client.put(
            f"{base}/v2/{repository}/manifests/{ref}",
            content=data,
            headers={"Content-Type": media_type},
        ),
        f"put manifest {repository}:{ref}",
    )
    return response.headers.get("Docker-Content-Digest", "")


def push(
    registry: _HasURL | str,
    repository: str,
    item: Image | Index,
    *,
    tag: str | None,
    client: httpx.Client | None = None,
    skip_blobs: frozenset[str] | set[str] = frozenset(),
) -> str:
    """Push an image or index: blobs (skipping existing), children by digest, then the top.

    Args:
        registry: a LocalRegistry/FaultProxy (anything with ``.url``, and ``.client()``
            for credentials) or a base URL such as ``http://127.0.0.1:5000``.
        repository: target repository, e.g. ``apps/web``.
        item: what to push.
        tag: tag for the top manifest; None pushes by digest only.
        client: an httpx client to use (already configured for TLS/auth).
        skip_blobs: digests of blobs not to push (a non-distributable layer the
            registry is never given).

    Returns:
        The digest of the top manifest.

    Raises:
        RuntimeError: the registry refused a request.
    """
    base, http, owned = _base_and_client(registry, client)
    try:
        images = item.children if isinstance(item, Index) else [item]
        seen: set[str] = set(skip_blobs)
        for image in images:
            for blob in image.blobs:
                if blob.digest not in seen:
                    seen.add(blob.digest)
                    _push_blob(http, base, repository, blob)
            if isinstance(item, Index):
                _put_manifest(
                    http, base, repository, image.digest, image.media_type, image.manifest_bytes
                )
        _put_manifest(
            http, base, repository, tag or item.digest, item.media_type, item.manifest_bytes
        )
        return item.digest
    finally:
        if owned:
            http.close()


def stream_random_layer(
    seed: int,
    size: int,
    chunk_size: int = 8 << 20,
    compresslevel: int = 0,
    raw_hasher: Any = None,
) -> Iterator[bytes]:
    """Yield the gzip tar bytes of a one-file layer of ``size`` seeded random bytes.

    The same (seed, size, compresslevel) always yields the same bytes, so the stream can
    be produced twice: once to hash, once to upload. Memory use is about ``chunk_size``.

    Args:
        seed: random seed.
        size: payload size in bytes.
        chunk_size: bytes of payload generated at a time.
        compresslevel: zlib level; 0 (stored deflate blocks, still valid gzip) is 5x
            faster than 1 and random data does not compress anyway.
        raw_hasher: optional hashlib object updated with the uncompressed tar (diff_id).
    """
    info = tarfile.TarInfo(f"data/{seed}.bin")
    info.size, info.mtime, info.mode = size, 0, 0o644
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    trailer = b"\0" * ((512 - size % 512) % 512 + 1024)
    comp = zlib.compressobj(compresslevel, zlib.DEFLATED, 31)
    rng = random.Random(seed)
    if raw_hasher is not None:
        raw_hasher.update(header)
    yield comp.compress(header)
    left = size
    while left:
        n = min(chunk_size, left)
        left -= n
        raw = rng.randbytes(n)
        if raw_hasher is not None:
            raw_hasher.update(raw)
        out = comp.compress(raw)
        if out:
            yield out
    if raw_hasher is not None:
        raw_hasher.update(trailer)
    yield comp.compress(trailer) + comp.flush()


def push_big_random_layer_image(
    registry: _HasURL | str,
    repository: str,
    tag: str,
    size: int,
    seed: int,
    *,
    chunk_size: int = 8 << 20,
    client: httpx.Client | None = None,
) -> Image:
    """Push a one-layer OCI image whose layer holds ``size`` random bytes, never in memory.

    The layer is generated twice as a stream: once to compute its digest and diff_id,
    once to upload it with chunked PATCH requests of ``chunk_size`` bytes.

    Args:
        registry: LocalRegistry / base URL (see :func:`push`).
        repository: target repository.
        tag: target tag.
        size: random payload size in bytes (e.g. ``1 << 30``).
        seed: random seed.
        chunk_size: PATCH chunk size in bytes.
        client: optional configured httpx client.

    Returns:
        The pushed Image; its layer Blob has empty ``data`` (digest/size are real).
    """
    hasher, raw_hasher, total = hashlib.sha256(), hashlib.sha256(), 0
    for piece in stream_random_layer(seed, size, chunk_size, raw_hasher=raw_hasher):
        hasher.update(piece)
        total += len(piece)
    layer = Blob(
        OCI_LAYER,
        b"",
        "sha256:" + hasher.hexdigest(),
        total,
        "sha256:" + raw_hasher.hexdigest(),
    )
    base, http, owned = _base_and_client(registry, client)
    try:
        if http.head(f"{base}/v2/{repository}/blobs/{layer.digest}").status_code != 200:
            start = _check(http.post(f"{base}/v2/{repository}/blobs/uploads/"), "start upload")
            location = urljoin(base + "/", start.headers["Location"])
            offset, buf = 0, bytearray()

            def send(data: bytes) -> None:
                nonlocal location, offset
                response = _check(
                    http.patch(
                        location,
                        content=bytes(data),
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{offset + len(data) - 1}",
                        },
                    ),
                    "patch",
                )
                location = urljoin(base + "/", response.headers["Location"])
                offset += len(data)

            for piece in stream_random_layer(seed, size, chunk_size):
                buf += piece
                while len(buf) >= chunk_size:
                    send(buf[:chunk_size])
                    del buf[:chunk_size]
            if buf:
                send(buf)
            _check(http.put(_with_digest(location, layer.digest)), "commit upload")
        image = _image_with_layer(layer)
        _push_blob(http, base, repository, image.config)
        _put_manifest(http, base, repository, tag, image.media_type, image.manifest_bytes)
        return image
    finally:
        if owned:
            http.close()


def _image_with_layer(layer: Blob) -> Image:
    """Return an OCI image manifest over one already-pushed layer (data not needed)."""
    platform = {"architecture": "amd64", "os": "linux"}
    config = Blob.of(OCI_CONFIG, _config_json([layer], platform, CREATED))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    data = json.dumps(manifest, indent=3).encode()
    return Image(data, OCI_MANIFEST, sha256_digest(data), len(data), config, [layer], platform)
