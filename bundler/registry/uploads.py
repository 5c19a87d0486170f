"""Pushing blobs: cross-repository mount, monolithic and chunked uploads, resumption.

A mixin of :class:`bundler.registry.RegistryClient`. An upload is POST (open a session)
then either one PUT with the whole blob (size <= ``chunk_size``) or PATCH requests of
``chunk_size`` bytes with ``Content-Range`` and a closing PUT. A registry that refuses
PATCH gets a monolithic PUT; one that refuses a large PUT (413) gets chunks. A chunked
upload cut mid-way, or a chunk answered 416 (the session stands elsewhere), asks the
registry where the session stands (GET on the upload URL, ``Range: 0-<last>``) and
continues from there. A closing PUT that fails transiently (5xx, no answer) is followed
by a HEAD of the blob (it may have landed, the answer lost), then the same PUT again on
the same session, and only then a new upload; a failed monolithic upload is followed by
the HEAD, then starts over.

Requests to an upload URL on another origin (scheme, host, port) carry no credentials
(:meth:`bundler.transport.RegistrySession.own_origin`).

Spec: distribution-spec "Pushing blobs" (monolithically, in chunks), "Mounting a blob
from another repository", "Getting the upload status".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import httpx

from ..errors import (
    AccessDeniedError,
    AuthenticationError,
    DigestMismatchError,
    IntegrityError,
    NotFoundError,
    RegistryError,
    TransportError,
)
from ..oci.digest import Digest

if TYPE_CHECKING:
    from .transport import TransportOptions

__all__ = ["BlobUploads"]

_log = logging.getLogger("bundler.http")

#: Statuses with which a registry refuses chunked (PATCH) uploads.
_PATCH_REFUSED = frozenset({400, 405, 406, 415, 416, 501})


def _transient(exc: RegistryError) -> bool:
    from .transport import RETRY_STATUSES

    return isinstance(exc, TransportError) or exc.status in RETRY_STATUSES


class BlobUploads:
    """Blob push operations, mixed into the registry client."""

    registry: str
    options: TransportOptions

    if TYPE_CHECKING:  # provided by RegistryClient
        def request(self, method: str, path: str, **kw: object) -> httpx.Response: ...
        def has_blob(self, repository: str, digest: Digest) -> bool: ...

    def mount_blob(self, repository: str, digest: Digest, source_repository: str) -> str | None:
        """Ask for a cross-repository mount.

        Returns:
            None if mounted (201); else the upload URL of the session the registry opened
            instead (202), or "" when it refused (so the caller opens its own upload).

        Spec: distribution-spec "Mounting a blob from another repository".
        """
        what = f"mount of {digest} from {source_repository} to {self.registry}/{repository}"
        try:
            response = self.request(
                "POST", f"/v2/{repository}/blobs/uploads/", what=what, ok=(201, 202),
                params={"mount": str(digest), "from": source_repository},
            )
        except (NotFoundError, AccessDeniedError, AuthenticationError):
            return ""
        if response.status_code == 201:
            return None
        return location(response, self.registry)

    def put_blob(
        self,
        repository: str,
        digest: Digest,
        size: int,
        open_source: Callable[[], Iterable[bytes]],
        *,
        upload_url: str = "",
    ) -> None:
        """Upload a blob, retrying transient failures and adapting to the registry.

        Args:
            repository: destination repository.
            digest, size: the blob's descriptor values (bytes).
            open_source: returns a fresh iterable of the blob's verified chunks; called
                again for every restart.
            upload_url: an upload session already opened (e.g. by a refused mount).

        Raises:
            DigestMismatchError: the registry reports another digest.
            RegistryError: the registry refused, or failed more than ``retries`` times.

        Spec: distribution-spec "Pushing a blob monolithically", "Pushing a blob in chunks".
        """
        what = f"blob {digest} to {self.registry}/{repository}"
        chunked = size > self.options.chunk_size
        switched = False
        failures = 0
        key = f"{self.registry}/{repository}@{digest}"
        start = self._journaled_offset(key, size, what) if chunked and not upload_url else None
        if start is not None:
            start, upload_url = start
        while True:
            url = upload_url or self._start_upload(repository, what)
            upload_url = ""
            try:
                if chunked:
                    response = self._upload_chunks(url, what, open_source, size, digest,
                                                   start=start or 0, key=key,
                                                   repository=repository)
                else:
                    body = open_source()
                    try:
                        response = self._send_body("PUT", with_digest(url, digest), what,
                                                   body, size, ok=(201, 204))
                    finally:
                        _close(body)  # an upload cut short gives its file back at once
            except IntegrityError:
                self._cancel_upload(url, what, key if chunked else "")
                raise
            except RegistryError as exc:
                start = None  # a new session starts from zero
                if not switched and ((chunked and exc.status in _PATCH_REFUSED)
                                     or (not chunked and exc.status == 413)):
                    chunked, switched = not chunked, True
                    continue
                failures += 1
                if not _transient(exc) or failures > self.options.retries:
                    raise
                if not chunked and self._landed(repository, digest, what):
                    return  # the PUT went through; its answer was lost
                time.sleep(self._backoff_s(failures))
                continue
            if response is None:  # landed: the registry had it after a failed PUT
                return
            served = response.headers.get("Docker-Content-Digest")
            if served and served != str(digest):
                raise DigestMismatchError(expected=str(digest), actual=served, where=what)
            return

    def _journaled_offset(self, key: str, size: int, what: str) -> tuple[int, str] | None:
        """(offset, upload URL) of a session an earlier run left for ``key``, if the
        registry still has it; see :mod:`bundler.journal`."""
        journal = self.options.journal
        saved = journal.get(key) if journal is not None else None
        if saved is None:
            return None
        state = self._upload_offset(saved, what)
        if state is None or not 0 < state[0] <= size:
            journal.remove(key)  # type: ignore[union-attr]
            return None
        _log.debug("continuing the upload of %s at byte %d", key, state[0])
        return state

    def _cancel_upload(self, url: str, what: str, key: str) -> None:
        """Drop an upload session that will never complete (the source is corrupt), so
        the registry does not keep its bytes until it purges old sessions; best effort.

        Spec: distribution-spec "Canceling an upload" (``DELETE`` on the session URL).
        """
        if key and self.options.journal is not None:
            self.options.journal.remove(key)
        try:
            self.request("DELETE", url, what=what, ok=(204, 202, 200, 404), retry=False)
        except RegistryError as exc:
            _log.debug("could not cancel the upload session of %s: %s", what, exc)

    def _landed(self, repository: str, digest: Digest, what: str) -> bool:
        """Whether the registry has the blob (HEAD), after an upload whose answer failed;
        False when it cannot tell."""
        try:
            found = self.has_blob(repository, digest)
        except RegistryError as exc:
            _log.debug("could not check whether %s landed: %s", what, exc)
            return False
        if found:
            _log.debug("%s landed although its PUT failed", what)
        return found

    def _finish_upload(self, repository: str, url: str, digest: Digest,
                       what: str) -> httpx.Response | None:
        """Close a chunked upload session with PUT ``?digest=``.

        A transient failure (5xx, no answer) is followed by a HEAD of the blob, then by
        the same PUT on the same session, up to ``retries`` times.

        Returns:
            The PUT's answer, or None when the blob turned out to have landed.

        Raises:
            RegistryError: the PUT was refused, or failed more than ``retries`` times
            (the caller then starts a new upload).

        Spec: distribution-spec "Pushing a blob in chunks" (closing the upload).
        """
        tries = 0
        while True:
            try:
                return self._send_body("PUT", with_digest(url, digest), what, b"", 0,
                                       ok=(201, 204))
            except RegistryError as exc:
                tries += 1
                if not _transient(exc) or tries > self.options.retries:
                    raise
                if self._landed(repository, digest, what):
                    return None
                time.sleep(self._backoff_s(tries))

    def _backoff_s(self, failures: int) -> float:
        return min(self.options.retry_delay_s * 2 ** (failures - 1), self.options.retry_cap_s)

    def _start_upload(self, repository: str, what: str) -> str:
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/", what=what, ok=(202,),
                                headers={"Content-Length": "0"})
        return location(response, self.registry)

    def _send_body(self, method: str, url: str, what: str, body: Iterable[bytes] | bytes,
                   length: int, *, ok: Iterable[int], extra: dict | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        headers.update(extra or {})
        return self.request(method, url, what=what, ok=ok, retry=False, content=body,
                            headers=headers)

    def _upload_offset(self, url: str, what: str) -> tuple[int, str] | None:
        """Where an upload session stands: (next byte offset, its URL), or None if gone."""
        try:
            response = self.request("GET", url, what=what, ok=(204,))
        except RegistryError:
            return None
        last = response.headers.get("Range", "0--1").rpartition("-")[2]
        try:
            # "0-0" is an empty session here: chunks are at least 1 KiB, never one byte
            offset = int(last) + 1 if last != "0" else 0
        except ValueError:
            return None
        return offset, location(response, self.registry) if "Location" in response.headers else url

    def _upload_chunks(self, url: str, what: str, open_source: Callable[[], Iterable[bytes]],
                       size: int, digest: Digest, *, start: int = 0, key: str = "",
                       repository: str = "") -> httpx.Response | None:
        journal = self.options.journal if key else None
        source = open_source()
        try:
            reader = ChunkReader(skip(source, start) if start else source)
            step, resumes = self.options.chunk_size, 0
            while start < size:
                length = min(step, size - start)
                try:
                    response = self._send_body(
                        "PATCH", url, what, reader.take(length), length, ok=(202, 204),
                        extra={"Content-Range": f"{start}-{start + length - 1}"},
                    )
                except RegistryError as exc:
                    resumes += 1
                    out_of_step = exc.status == 416  # the session stands at another offset
                    if not (_transient(exc) or out_of_step) or resumes > self.options.retries:
                        raise
                    if not out_of_step:
                        time.sleep(self._backoff_s(resumes))
                    state = self._upload_offset(url, what)
                    if state is None or not 0 <= state[0] <= size:
                        raise
                    start, url = state
                    _close(source)
                    source = open_source()
                    reader = ChunkReader(skip(source, start))
                    continue
                url = location(response, self.registry)
                start += length
                if journal is not None:
                    journal.put(key, url)
            reader.drain()  # lets a verifying source finish its checks
        finally:
            _close(source)
        response = self._finish_upload(repository, url, digest, what)
        if journal is not None:
            journal.remove(key)
        return response


class ChunkReader:
    """Cut an iterator of chunks into consecutive windows of exact lengths, lazily."""

    def __init__(self, source: Iterable[bytes]) -> None:
        self._chunks = iter(source)
        self._buffer = b""

    def take(self, length: int) -> Iterator[bytes]:
        """Yield exactly ``length`` bytes (fewer only if the source ends)."""
        left = length
        while left > 0:
            if not self._buffer:
                self._buffer = next(self._chunks, b"")
                if not self._buffer:
                    return
            piece, self._buffer = self._buffer[:left], self._buffer[left:]
            left -= len(piece)
            yield piece

    def drain(self) -> None:
        """Read the source to its end."""
        for _ in self._chunks:
            pass


def _close(source: Iterable[bytes]) -> None:
    """Close a source that can be closed (a generator over an open file)."""
    close = getattr(source, "close", None)
    if close is not None:
        close()


def skip(chunks: Iterable[bytes], count: int) -> Iterator[bytes]:
    """The chunks after the first ``count`` bytes (those are still read, and verified)."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        if count:
            chunk, count = chunk[count:], 0
        yield chunk


def location(response: httpx.Response, registry: str = "") -> str:
    """The ``Location`` header resolved against the URL of the response that gave it.

    Args:
        response: an upload answer (202, 201, 204).
        registry: ``host[:port]`` of the registry that answered, for the error.

    Returns:
        The absolute upload URL.

    Raises:
        RegistryError: no ``Location`` header (names the registry).

    Spec: distribution-spec "Pushing blobs" (``Location``).
    """
    value = response.headers.get("Location")
    if not value:
        at = f"{registry} answered " if registry else ""
        raise RegistryError(
            f"{response.request.method} {response.request.url.path}: {at}no Location header",
            status=response.status_code, url=str(response.request.url.copy_with(query=None)),
            registry=registry,
        )
    return str(response.url.join(value))


def with_digest(url: str, digest: Digest) -> str:
    """``url`` with ``digest=<digest>`` added to its query (existing parameters kept)."""
    return str(httpx.URL(url).copy_add_param("digest", str(digest)))
