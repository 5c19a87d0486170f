"""A distribution-spec client for one registry: manifests, blobs, tags.

Built on :class:`bundler.transport.RegistrySession` (one ``httpx.Client``, retries,
errors) and :class:`bundler.uploads.BlobUploads` (pushing blobs). A blob download cut
mid-way is reopened with ``Range`` from the byte where it stopped (or re-read and skipped
up to there when the server ignores ``Range``). A Docker schema 1 manifest is refused
("schema1 is not supported"), never reported as a digest mismatch. The empty descriptor's
blob (``{}``, :data:`bundler.content.EMPTY_JSON_DIGEST`) is those two bytes even when a
mirror serves it empty or not at all.

Spec: distribution-spec ("Pulling manifests", "Pulling blobs", "Pushing manifests",
"Listing tags", "Checking if content exists").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Generator
from urllib.parse import urlencode

import httpx

from ..errors import (
    DigestMismatchError,
    InvalidReferenceError,
    ManifestError,
    NotFoundError,
    RegistryError,
)
from ..oci.content import (
    ACCEPT_MANIFESTS,
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    is_schema1,
    schema1_refusal,
)
from ..oci.digest import Digest
from ..oci.limits import LISTED_LIMIT
from .auth import redact_url
from .transport import MANIFEST_LIMIT, RETRY_STATUSES, RegistrySession, TransportOptions
from .uploads import BlobUploads

__all__ = ["CATALOG_PAGE", "RETRY_STATUSES", "TAGS_PAGE", "RegistryClient", "TransportOptions"]

_http_log = logging.getLogger("bundler.http")
#: Manifests fetched by :meth:`RegistryClient.resolve` kept for the GET that follows.
_PREFETCHED_MAX = 8
#: ``n`` of a tags list request: tags asked for per page.
TAGS_PAGE = 1000
#: ``n`` of a catalog request: repositories asked for per page.
CATALOG_PAGE = 1000


class RegistryClient(RegistrySession, BlobUploads):
    """Talk to one registry: manifests, blobs, uploads, mounts, tags.

    Args:
        registry: ``host[:port]`` as in a reference (``docker.io`` for Docker Hub).
        options: transport options of this side.

    All methods raise :class:`RegistryError` subclasses: ``AuthenticationError`` (401),
    ``AccessDeniedError`` (403), ``NotFoundError`` (404), ``RateLimitError`` (429 after
    retries), ``TransportError`` (no answer), each naming the registry and what was asked.
    """

    def __init__(self, registry: str, options: TransportOptions | None = None) -> None:
        super().__init__(registry, options)
        self._prefetch: OrderedDict[tuple[str, str], tuple[bytes, str, Digest]] = OrderedDict()
        self._prefetch_lock = threading.Lock()

    def __enter__(self) -> RegistryClient:
        return self

    def _keep(self, repository: str, identifier: str, fetched: tuple[bytes, str, Digest]) -> None:
        """Keep a manifest that ``resolve`` had to GET for the next GET of it (by the same
        identifier or by its digest): each GET counts as a pull on some registries."""
        cache = self._prefetch
        with self._prefetch_lock:
            for key in ((repository, identifier), (repository, str(fetched[2]))):
                cache[key] = fetched
            while len(cache) > _PREFETCHED_MAX:
                cache.popitem(last=False)

    def _take(self, repository: str, identifier: str) -> tuple[bytes, str, Digest] | None:
        cache = self._prefetch
        with self._prefetch_lock:
            fetched = cache.pop((repository, identifier), None)
            if fetched is not None:  # one use: forget it under its other key too
                for key in [k for k, v in cache.items() if v is fetched]:
                    del cache[key]
        return fetched

    # -- manifests ------------------------------------------------------------------
    def get_manifest(self, repository: str, identifier: str) -> tuple[bytes, str, Digest]:
        """GET a manifest or index by tag or digest.

        Returns:
            (raw bytes exactly as served, media type from Content-Type, digest of the bytes).

        Raises:
            NotFoundError: unknown tag/digest/repository. DigestMismatchError: the bytes do
            not hash to the requested digest or to ``Docker-Content-Digest``.
            ManifestError: larger than ``MANIFEST_LIMIT``; a Docker schema 1 manifest
            ("schema1 is not supported").

        Spec: distribution-spec "Pulling manifests".
        """
        fetched = self._take(repository, identifier)
        if fetched is not None:
            return fetched
        what = f"manifest {self.registry}/{repository}{_sep(identifier)}{identifier}"
        response = self.request(
            "GET", f"/v2/{repository}/manifests/{identifier}", what=what,
            headers={"Accept": ACCEPT_MANIFESTS}, stream=True,
        )
        try:
            raw = bytearray()
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > MANIFEST_LIMIT:
                    raise ManifestError(f"{what}: larger than {MANIFEST_LIMIT} bytes")
        except httpx.TransportError as exc:
            raise self._transport_error(exc, str(response.url), what) from exc
        finally:
            response.close()
        raw = bytes(raw)
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_MEDIA_TYPES and media_type not in INDEX_MEDIA_TYPES and \
                is_schema1(raw, media_type):  # its digest is over the JWS payload, not raw
            raise schema1_refusal(what)
        if identifier.startswith("sha") and ":" in identifier:
            want: Digest | None = Digest.parse(identifier)
        else:
            want = self._served_digest(response, what)
        got = Digest.of(raw, want.algorithm) if want is not None else Digest.of(raw)
        if want is not None and got != want:
            raise DigestMismatchError(expected=str(want), actual=str(got), where=what)
        return raw, media_type, got if got.algorithm == "sha256" else Digest.of(raw)

    def resolve(self, repository: str, identifier: str) -> Digest | None:
        """HEAD a manifest: its digest, or None if the registry does not have it (404).

        Falls back to GET only when the registry answers HEAD with 405 or without
        ``Docker-Content-Digest`` (a GET by tag counts as a pull on some registries); the
        manifest so fetched serves the next :meth:`get_manifest` of it, so it is fetched
        once.

        Raises:
            RegistryError: an error answer, or a malformed ``Docker-Content-Digest``.

        Spec: distribution-spec "Checking if content exists in the registry".
        """
        what = f"manifest {self.registry}/{repository}{_sep(identifier)}{identifier}"
        response = self.request(
            "HEAD", f"/v2/{repository}/manifests/{identifier}", what=what,
            headers={"Accept": ACCEPT_MANIFESTS}, ok=(200, 404, 405),
        )
        if response.status_code == 404:
            return None
        if response.status_code == 200:
            digest = self._served_digest(response, what)
            if digest is not None:
                return digest
        try:
            fetched = self.get_manifest(repository, identifier)
        except NotFoundError:
            return None
        self._keep(repository, identifier, fetched)
        return fetched[2]

    def _served_digest(self, response: httpx.Response, what: str) -> Digest | None:
        """``Docker-Content-Digest`` of a response, or None when absent.

        Raises:
            RegistryError: the header is not a digest (names the registry).
        """
        value = response.headers.get("Docker-Content-Digest")
        if not value:
            return None
        try:
            return Digest.parse(value)
        except InvalidReferenceError as exc:
            raise RegistryError(
                f"{what}: {self.registry} answered a malformed Docker-Content-Digest "
                f"{value[:100]!r}", status=response.status_code,
                url=str(response.request.url.copy_with(query=None)), registry=self.registry,
            ) from exc

    def put_manifest(self, repository: str, identifier: str, raw: bytes, media_type: str) -> Digest:
        """PUT manifest bytes unchanged under a tag or digest; check the returned digest.

        Raises:
            DigestMismatchError: ``Docker-Content-Digest`` differs from the bytes' digest.

        Spec: distribution-spec "Pushing manifests".
        """
        digest = Digest.of(raw)
        what = f"manifest {digest} to {self.registry}/{repository}{_sep(identifier)}{identifier}"
        response = self.request(
            "PUT", f"/v2/{repository}/manifests/{identifier}", what=what, ok=(200, 201, 202),
            content=raw, headers={"Content-Type": media_type},
        )
        served = response.headers.get("Docker-Content-Digest")
        if served and served != str(digest):
            raise DigestMismatchError(expected=str(digest), actual=served, where=what)
        return digest

    def list_tags(self, repository: str, *, page_size: int = TAGS_PAGE) -> list[str]:
        """All tags of a repository, page by page.

        Args:
            repository: the repository name (``team-a/app``).
            page_size: ``n``, the most tags asked for per request.

        Returns:
            The tags in the order served (lexical on distribution registries); empty for
            a repository that has manifests but no tag.

        Raises:
            NotFoundError: no such repository. RegistryError: an error answer, or a body
            that is no tag list.

        Spec: distribution-spec "Listing Tags" (``n``, ``last``, the ``Link`` header).
        """
        return self._paged(f"/v2/{repository}/tags/list", "tags", page_size,
                           f"tags of {self.registry}/{repository}")

    def catalog(self, *, page_size: int = CATALOG_PAGE) -> list[str]:
        """Every repository name the registry lists, page by page.

        Raises:
            RegistryError: an error answer (Docker Hub and GHCR serve no catalog: 401 or
            404), or a body that is no repository list.

        Spec: Docker Registry HTTP API V2 "Catalog" (``n``, ``last``, ``Link``); the
        catalog is not part of the OCI distribution-spec.
        """
        return self._paged("/v2/_catalog", "repositories", page_size,
                           f"catalog of {self.registry}")

    def _paged(self, path: str, key: str, page_size: int, what: str) -> list[str]:
        """GET ``path?n=page_size`` and the pages after it: the ``Link`` header's next
        URL when given, else ``last=<last item>`` while full pages come back. A registry
        that refuses ``n`` as too large (400) is asked again without it."""
        items: list[str] = []
        seen: set[str] = set()
        url: str | None = f"{path}?n={page_size}"
        while url:
            response = self.request("GET", url, what=what, ok=(200, 400))
            if response.status_code == 400:
                if url != f"{path}?n={page_size}":
                    self.request("GET", url, what=what)  # raises the registry's error
                url = path  # n above the registry's most (PAGINATION_NUMBER_INVALID):
                page_size = 0  # its own page size, and only its Link header, then
                continue
            try:
                body = response.json()
                if not isinstance(body, dict):
                    kind = {list: "an array", str: "a string", bool: "a boolean"}.get(
                        type(body), "null" if body is None else "a number")
                    raise ValueError(f"JSON {kind}, not an object")
                page = body.get(key) or []
                if not isinstance(page, list) or not all(isinstance(i, str) for i in page):
                    raise ValueError(f"{key!r} is no list of strings")
            except RecursionError as exc:
                raise RegistryError(f"{what}: not a {key} list (JSON nested too deeply)",
                                    status=response.status_code, registry=self.registry,
                                    url=str(response.request.url.copy_with(query=None))
                                    ) from exc
            except ValueError as exc:  # JSONDecodeError too
                raise RegistryError(f"{what}: not a {key} list ({exc})",
                                    status=response.status_code, registry=self.registry,
                                    url=str(response.request.url.copy_with(query=None))
                                    ) from exc
            fresh = [i for i in page if i not in seen]
            items.extend(fresh)
            seen.update(fresh)
            if len(items) > LISTED_LIMIT:
                raise RegistryError(f"{what}: more than {LISTED_LIMIT:,} entries, the most "
                                    "bundler reads from one listing", registry=self.registry,
                                    url=str(response.request.url.copy_with(query=None)))
            link = response.links.get("next", {}).get("url")
            if link and fresh:  # a Link after a page of nothing new would loop forever
                url = self._next_page(response, link, what)
            elif page_size and len(page) >= page_size and fresh:  # full page, no Link
                url = f"{path}?{urlencode({'n': page_size, 'last': page[-1]})}"
            else:
                url = None
        return items

    def has_repository(self, repository: str) -> bool | None:
        """Whether the registry knows ``repository``, asked with one ``GET tags/list?n=1``.

        Returns:
            False when it answers 404 ``NAME_UNKNOWN`` (no tag there: none of its blobs
            and manifests need a ``HEAD``); True when it lists tags; None when it cannot
            say (another error: no right to list tags, say), and the caller asks as usual.

        Spec: distribution-spec "Listing tags", error code ``NAME_UNKNOWN``.
        """
        try:
            self.request("GET", f"/v2/{repository}/tags/list?n=1",
                         what=f"tags of {self.registry}/{repository}")
        except NotFoundError as exc:
            return False if "NAME_UNKNOWN" in exc.codes else None
        except RegistryError:
            return None
        return True

    def _next_page(self, response: httpx.Response, link: str, what: str) -> str:
        """The URL a ``Link: <...>; rel="next"`` header names, on the same registry.

        Raises:
            RegistryError: a Link that is no URL, or that names another scheme or host
            (the listing never leaves the registry asked).
        """
        try:
            url = response.url.join(link)
            same = (url.scheme, url.host, url.port) == (
                response.url.scheme, response.url.host, response.url.port)
        except (httpx.InvalidURL, ValueError, TypeError):
            same, url = False, None
        if url is None or not same:
            where = "no URL" if url is None else "another host"
            raise RegistryError(f"{what}: the Link header of the page names {where}: "
                                f"{link!r}", status=response.status_code,
                                registry=self.registry,
                                url=str(response.request.url.copy_with(query=None)))
        return str(url)

    # -- blobs ----------------------------------------------------------------------
    def has_blob(self, repository: str, digest: Digest) -> bool:
        """HEAD a blob: True if the repository has it (distribution-spec "Checking if
        content exists")."""
        response = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", ok=(200, 404),
            what=f"blob {digest} in {self.registry}/{repository}",
        )
        return response.status_code == 200

    def iter_blob(self, repository: str, digest: Digest, *,
                  offset: int = 0) -> Generator[bytes, None, None]:
        """Stream a blob's bytes from ``offset``; resume with ``Range`` when cut.

        Redirects to storage hosts are followed without our Authorization header. The
        caller verifies the bytes (see :class:`bundler.digest.VerifyingReader`) and
        closes the generator when it stops early, which closes the response at once.

        Raises:
            NotFoundError: no such blob. TransportError: cut more than ``retries`` times
            in a row without a byte received between the cuts.

        Spec: distribution-spec "Pulling blobs"; RFC 9110 Range.
        """
        what = f"blob {digest} from {self.registry}/{repository}"
        path = f"/v2/{repository}/blobs/{digest}"
        if digest == EMPTY_JSON_DIGEST:
            yield from self._empty_json(path, what, offset)
            return
        position, cuts, cut_at = offset, 0, offset
        while True:
            headers = {"Range": f"bytes={position}-"} if position else {}
            response = self.request("GET", path, what=what, ok=(200, 206), stream=True,
                                    headers=headers)
            skip = position if position and response.status_code == 200 else 0
            try:
                for chunk in response.iter_bytes():  # as received: nothing buffered is lost on a cut
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    position += len(chunk)
                    yield chunk
                return
            except httpx.TransportError as exc:
                _http_log.debug("GET %s -> cut at byte %d: %s", redact_url(response.url),
                                position, str(exc) or type(exc).__name__)
                if position > cut_at:  # progress since the last cut: a fresh budget
                    cuts = 0
                cuts, cut_at = cuts + 1, position
                if cuts > self.options.retries:
                    raise self._transport_error(exc, str(response.url), what) from exc
                time.sleep(min(self.options.retry_delay_s * 2 ** (cuts - 1), self.options.retry_cap_s))
            finally:
                response.close()


    def _empty_json(self, path: str, what: str, offset: int) -> Generator[bytes, None, None]:
        """The empty descriptor's blob from ``offset``: as served, or ``{}`` when the
        registry serves no bytes or none at all (404); its digest fixes its content.

        Spec: image-spec manifest.md "Guidance for an Empty Descriptor".
        """
        response = self.request("GET", path, what=what, ok=(200, 404), stream=True)
        try:
            served = b""
            if response.status_code == 200:
                for chunk in response.iter_bytes():
                    served += chunk
                    if len(served) > len(EMPTY_JSON):  # not {}: the caller's check says so
                        break
        except httpx.TransportError as exc:
            raise self._transport_error(exc, str(response.url), what) from exc
        finally:
            response.close()
        if not served:
            _http_log.debug("%s: served %s; it is {} by its digest", what,
                            "empty" if response.status_code == 200 else "404")
            served = EMPTY_JSON
        yield served[offset:]


def _sep(identifier: str) -> str:
    return "@" if ":" in identifier else ":"
