"""The HTTP side of ``bundler serve``: the pull endpoints of the distribution spec.

Every request under ``/v2/`` goes through one handler, which reads the path itself: a
repository name holds ``/``, so the name is everything before the last
``/manifests/``, ``/blobs/``, ``/referrers/`` or ``/tags/list``. Routes:

====================================  ==============================================
``GET|HEAD /v2/``                     200 ``{}`` (401 without credentials, with auth)
``GET|HEAD /v2/<name>/manifests/<r>`` the exact bytes, ``Content-Type`` = media type
``GET|HEAD /v2/<name>/blobs/<d>``     the blob (``Range``: 206, 416), sent by sendfile
``GET /v2/<name>/tags/list``          ``?n=&last=``, ``Link: <...>; rel="next"``
``GET /v2/<name>/referrers/<d>``      an image index (``?artifactType=`` filters)
``GET /v2/_catalog``                  ``?n=&last=``, ``Link`` (Docker registry API)
anything else                         405 ``UNSUPPORTED`` (a write), 404 otherwise
====================================  ==============================================

A path holding an encoded ``/`` or ``\\``, a ``.`` or ``..`` segment, or a name or
reference outside the spec's grammar gets 404. A blob is served only under a
repository whose images use it. Errors carry the spec's body
``{"errors": [{"code", "message", "detail"}]}``.

Spec: distribution-spec v1.1 "Pull", "Content Discovery", "Error Codes"; RFC 9110
§14 (Range); Docker registry HTTP API v2 (``_catalog``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlencode

from aiohttp import web

from ..errors import BundleError, IntegrityError
from ..oci.content import OCI_INDEX
from ..oci.digest import Digest
from ..stores.tar_index import Segment
from .index import BlobFile, Namespace, Repository, StaleBundleError, referrers_index

__all__ = ["API_VERSION", "make_app"]

#: The header Docker clients look for (distribution-spec "Historical Context").
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
_NAME = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_ITEM = re.compile(r"^(?P<name>.+)/(?P<kind>manifests|blobs|referrers)/(?P<ref>[^/]+)$")
_UPLOADS = re.compile(r"^.+/blobs/uploads(?:/.*)?$")
_ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c|2e)", re.IGNORECASE)
_FALLBACK_CHUNK = 1 << 20
_READS = ("GET", "HEAD")


def error(status: int, code: str, message: str, detail: Any = None,
          headers: dict[str, str] | None = None) -> web.Response:
    """A response with the spec's error body.

    Args:
        status: the HTTP status.
        code: a distribution-spec error code (``MANIFEST_UNKNOWN``, ``UNSUPPORTED``, ...).
        message: a sentence for people.
        detail: anything JSON (None: an empty object).

    Spec: distribution-spec "Error Codes".
    """
    body = {"errors": [{"code": code, "message": message, "detail": detail or {}}]}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json", headers=headers)


def _digest(text: str) -> Digest | None:
    try:
        return Digest.parse(text)
    except Exception:
        return None


class _BlobResponse(web.StreamResponse):
    """A blob (or a byte range of it) sent from file segments with ``loop.sendfile``
    (zero copy on a plain socket; ``pread`` in a thread and writes over TLS)."""

    def __init__(self, blob: BlobFile, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._blob = blob

    async def prepare(self, request: web.BaseRequest) -> Any:
        try:
            writer = await super().prepare(request)
            if request.method == "HEAD":
                return writer
            loop = asyncio.get_running_loop()
            for segment in self._blob.segments:
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError("connection lost")
                try:
                    await loop.sendfile(transport, segment.file, segment.offset, segment.size,
                                        fallback=False)
                    continue
                except (NotImplementedError, RuntimeError):  # TLS: no sendfile
                    pass
                offset, left = segment.offset, segment.size
                while left > 0:
                    chunk = await loop.run_in_executor(
                        None, os.pread, segment.file.fileno(), min(left, _FALLBACK_CHUNK), offset)
                    if not chunk:
                        raise ConnectionResetError("the bundle file ended early")
                    await self.write(chunk)
                    offset += len(chunk)
                    left -= len(chunk)
            await self.write_eof()
            return writer
        finally:
            self._blob.close()


def _range(request: web.Request, size: int) -> tuple[int, int] | None | str:
    """(start, count) of a ``Range`` request, None for the whole blob, or ``"416"``.

    A range unit other than ``bytes`` is ignored (RFC 9110 §14.2: the whole blob); a
    suffix range of 0 bytes (``bytes=-0``) is not satisfiable (§14.1.1)."""
    header = request.headers.get("Range")
    if header is None or not header.lower().startswith("bytes="):
        return None
    if re.fullmatch(r"bytes=\s*-0+\s*", header, re.IGNORECASE):
        return "416"
    try:
        rng = request.http_range
    except ValueError:
        return "416"
    start, stop = rng.start, rng.stop
    if start is not None and start < 0 and stop is None:  # bytes=-N: the last N bytes
        start = max(0, size + start)
        stop = size
    start = start or 0
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        return "416"
    return start, stop - start


def _paginate(items: list[str], request: web.Request, path: str,
              extra: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]] | None:
    """The page of a sorted list that ``?n=&last=`` asks for, and its ``Link`` header
    when more follow; None for an ``n`` that is no integer >= 0."""
    last = request.query.get("last")
    if last is not None:
        items = [item for item in items if item > last]
    headers: dict[str, str] = {}
    n_text = request.query.get("n")
    if n_text is not None:
        if not (n_text.isascii() and n_text.isdigit()):  # int('²') raises
            return None
        n = int(n_text)
        if len(items) > n:
            items = items[:n]
            if n > 0:
                query = urlencode({**(extra or {}), "n": n, "last": items[-1]})
                headers["Link"] = f'<{path}?{query}>; rel="next"'
    return items, headers


def make_app(current: Callable[[], Namespace], *,
             check_auth: Callable[[web.Request], Any] | None = None,
             middlewares: list[Any] | None = None) -> web.Application:
    """The aiohttp application.

    Args:
        current: returns the namespace to answer from (it changes when a bundle is
            read again).
        check_auth: an async function returning None when the request may go on, else
            the response to send (401).
        middlewares: aiohttp middlewares to run first (the access log).

    Returns:
        The application; every path under ``/v2`` is answered by it, others get 404.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        response = await _dispatch(request)
        response.headers[API_VERSION[0]] = API_VERSION[1]
        return response

    async def _dispatch(request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        if _ENCODED_SEPARATOR.search(raw):
            return error(404, "NAME_UNKNOWN", "repository name not known to registry")
        path = unquote(raw)
        if any(part in (".", "..") for part in path.split("/")):
            return error(404, "NAME_UNKNOWN", "repository name not known to registry")
        if check_auth is not None and (denied := await check_auth(request)) is not None:
            return denied  # type: ignore[no-any-return]
        tail = path[len("/v2/"):] if path.startswith("/v2/") else ""
        if request.method not in _READS or _UPLOADS.match(tail):
            return error(405, "UNSUPPORTED", "this registry is read-only (bundler serve): "
                         "it answers pulls only", headers={"Allow": "GET, HEAD"})
        namespace = current()
        if path in ("/v2", "/v2/"):
            return web.json_response({})
        if tail == "_catalog":
            return _catalog(request, namespace)
        if tail.endswith("/tags/list"):
            return _tags(request, namespace, tail[: -len("/tags/list")])
        match = _ITEM.match(tail)
        if match is None or not _NAME.fullmatch(match["name"]):
            return error(404, "NAME_UNKNOWN", "repository name not known to registry")
        name, kind, ref = match["name"], match["kind"], match["ref"]
        repo = namespace.repositories.get(name)
        if repo is None:
            return error(404, "NAME_UNKNOWN", "repository name not known to registry",
                         {"name": name})
        if kind == "manifests":
            return _manifest(namespace, repo, ref)
        digest = _digest(ref)
        if kind == "blobs":
            if digest is None:
                return error(404, "BLOB_UNKNOWN", "blob unknown to registry")
            return _blob(request, namespace, repo, digest)
        if digest is None:
            return error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        return _referrers(request, repo, digest)

    app = web.Application(middlewares=middlewares or [])
    app.router.add_route("*", "/v2", handle)
    app.router.add_route("*", "/v2/{tail:.*}", handle)
    return app


def _catalog(request: web.Request, namespace: Namespace) -> web.Response:
    page = _paginate(sorted(namespace.repositories), request, "/v2/_catalog")
    if page is None:
        return error(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
    names, headers = page
    return web.json_response({"repositories": names}, headers=headers)


def _tags(request: web.Request, namespace: Namespace, name: str) -> web.Response:
    repo = namespace.repositories.get(name) if _NAME.fullmatch(name) else None
    if repo is None:
        return error(404, "NAME_UNKNOWN", "repository name not known to registry",
                     {"name": name})
    page = _paginate(sorted(repo.tags), request, f"/v2/{name}/tags/list")
    if page is None:
        return error(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
    tags, headers = page
    return web.json_response({"name": name, "tags": tags}, headers=headers)


def _manifest(namespace: Namespace, repo: Repository, ref: str) -> web.Response:
    digest = _digest(ref) if ":" in ref else None
    if digest is None and (not _TAG.fullmatch(ref) or ref not in repo.tags):
        return error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"reference": ref})
    digest = digest or repo.tags[ref]
    if digest not in repo.manifests:
        return error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"reference": ref})
    media_type, data = namespace.manifests[digest]
    return web.Response(body=data, headers={
        "Content-Type": media_type, "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"'})


def _blob(request: web.Request, namespace: Namespace, repo: Repository,
          digest: Digest) -> web.StreamResponse:
    in_memory = namespace.manifests.get(digest) if digest in repo.manifests else None
    if digest not in repo.blobs and in_memory is None:
        return error(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": str(digest)})
    size = len(in_memory[1]) if in_memory is not None else namespace.blobs[digest][1]
    headers = {"Docker-Content-Digest": str(digest), "Accept-Ranges": "bytes",
               "Content-Type": "application/octet-stream", "ETag": f'"{digest}"'}
    wanted = _range(request, size)
    if wanted == "416":
        return error(416, "BLOB_UNKNOWN", "requested range not satisfiable",
                     headers={"Content-Range": f"bytes */{size}"})
    start, count = wanted if isinstance(wanted, tuple) else (0, size)
    status = 206 if isinstance(wanted, tuple) else 200
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{start + count - 1}/{size}"
    if in_memory is not None:
        return web.Response(status=status, body=in_memory[1][start:start + count],
                            headers=headers)
    source = namespace.blobs[digest][0]
    try:
        blob = source.open_blob(digest, size)
    except StaleBundleError:
        return error(503, "UNKNOWN", "the bundle changed on disk and is being read again",
                     headers={"Retry-After": "1"})
    except (FileNotFoundError, BundleError, IntegrityError):  # gone, a link, resized
        return error(404, "BLOB_UNKNOWN", "blob unknown to registry (not readable in the "
                     "bundle)", {"digest": str(digest)})
    blob = _cut(blob, start, count)
    response = _BlobResponse(blob, status=status, headers=headers)
    response.content_length = count
    return response


def _cut(blob: BlobFile, start: int, count: int) -> BlobFile:
    """The segments of ``count`` bytes from byte ``start`` of a blob."""
    cut: list[Segment] = []
    for segment in blob.segments:
        if start >= segment.size:
            start -= segment.size
            continue
        take = min(segment.size - start, count)
        if take <= 0:
            break
        cut.append(Segment(segment.file, segment.offset + start, take))
        count -= take
        start = 0
    return BlobFile(cut, blob.close)


def _referrers(request: web.Request, repo: Repository, digest: Digest) -> web.Response:
    found = repo.referrers.get(digest, {})
    descriptors = [found[d] for d in sorted(found, key=str)]
    headers = {"Content-Type": OCI_INDEX}
    wanted = request.query.get("artifactType")
    if wanted is not None:
        descriptors = [d for d in descriptors if d.get("artifactType") == wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    return web.Response(body=referrers_index(descriptors), headers=headers)
