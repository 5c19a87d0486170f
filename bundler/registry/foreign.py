"""Non-distributable (foreign) layers fetched for a bundle (``--include-foreign-layers``).

A foreign layer's descriptor lists ``urls`` its blob can be downloaded from; many
registries hold the blob as well. :class:`ForeignSource` tries the source registry
first (with its credentials), then each URL in order, and streams the first answer;
the store checks size and digest through the verifying reader as for any blob.

What a URL may be, and what it gets:

* ``https``; plain ``http`` only where bundler allows it for a registry: a loopback
  host, or with TLS verification turned off for the source side (``--src-tls-verify
  false``). Other schemes (``file``, ``ftp``, ...) and malformed URLs are refused
  without a request.
* no credentials: no Authorization header, no registry credentials, no cookies of
  another host, no user info (a ``user:password@`` part is dropped). Redirects are
  followed (at most :data:`MAX_REDIRECTS`) under the same rules, hop by hop.
* TLS is verified against the system store and the certs.d directory of the URL's own
  host (``/etc/containers/certs.d/HOST:PORT``), never the ``--src-cert-dir`` given for
  the registries (its client certificate belongs to them).

Spec: image-spec ``descriptor.md`` (``urls``), ``layer.md`` "Non-Distributable Layers";
distribution-spec "Pulling blobs"; RFC 9110 Range.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Generator, Iterator

import httpx

from ..errors import (
    BundlerError,
    DigestMismatchError,
    ForeignLayerError,
    IntegrityError,
    RegistryError,
    SizeMismatchError,
)
from ..oci.content import Descriptor
from .auth import redact_url
from .tls import ssl_context
from .transport import TransportOptions, is_loopback

__all__ = ["MAX_REDIRECTS", "ForeignLayerError", "ForeignSource", "check_url", "iter_url"]

_http_log = logging.getLogger("bundler.http")

#: Redirects followed for one URL before it counts as failed.
MAX_REDIRECTS = 10
_USER_AGENT = "bundler/0.1"


class _URLFailed(BundlerError):
    """One URL refused or failed before its first byte (the next one is tried)."""


def shown_url(url: object) -> str:
    """A URL from a manifest fit for a message: no user info or secret query values,
    non-printable characters escaped, at most 200 characters."""
    try:
        text = redact_url(str(url))
    except (httpx.InvalidURL, TypeError, ValueError):  # not a URL: drop what may be secret
        text = re.sub(r"^([^/?#]*//)[^/?#]*@", r"\1", str(url))
        text = text.split("?", 1)[0] + ("?***" if "?" in text else "")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 200 else text[:200] + "..."


def check_url(url: object, *, tls_verify: bool) -> httpx.URL:
    """Parse a ``urls`` entry and check it may be fetched.

    Args:
        url: the entry as the manifest gives it (anything: it came from outside).
        tls_verify: the source side's TLS verification; False also allows plain http.

    Returns:
        The URL without user info.

    Raises:
        _URLFailed: not a string, malformed, not https (nor http where allowed), or no
        host.
    """
    if not isinstance(url, str):
        raise _URLFailed(f"{shown_url(url)}: refused: not a string")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _URLFailed(f"{shown_url(url)}: refused: malformed URL ({exc})") from None
    host = parsed.netloc.decode("ascii", "replace").rsplit("@", 1)[-1]
    if parsed.scheme == "http" and (not tls_verify or is_loopback(host)):
        pass
    elif parsed.scheme != "https":
        raise _URLFailed(f"{shown_url(url)}: refused: only https URLs are fetched (plain http "
                         "only for a loopback host or with --src-tls-verify=false)")
    if not parsed.host:
        raise _URLFailed(f"{shown_url(url)}: refused: no host")
    return parsed.copy_with(userinfo=b"")


def iter_url(url: object, offset: int, size: int, options: TransportOptions
             ) -> Generator[bytes, None, None]:
    """Stream a blob from a ``urls`` entry from byte ``offset``, with no credentials.

    Each redirect hop is checked with :func:`check_url` and gets a fresh client (its own
    host's TLS settings, no cookies from another host). A server that ignores ``Range``
    is read from the start and the first ``offset`` bytes are skipped. A 200 answer
    whose ``Content-Length`` is not ``size`` is refused before its body is read.

    Args:
        url: the ``urls`` entry.
        offset: bytes already held (continue from there).
        size: the descriptor's size in bytes.
        options: the source side's transport options (TLS verification, timeout).

    Raises:
        _URLFailed: refused, no answer, an error status, a wrong length, or too many
        redirects, before the first byte; a cut after it.
    """
    current = check_url(url, tls_verify=options.tls_verify)
    for _hop in range(MAX_REDIRECTS + 1):
        host = current.netloc.decode("ascii", "replace")
        shown = shown_url(current)
        try:
            verify = ssl_context(host, verify=options.tls_verify)
            with httpx.Client(verify=verify, follow_redirects=False,
                              timeout=httpx.Timeout(options.timeout_s),
                              headers={"User-Agent": _USER_AGENT}) as http:
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                with http.stream("GET", current, headers=headers) as response:
                    _http_log.debug("GET %s -> %d (non-distributable layer URL)",
                                    redact_url(current), response.status_code)
                    if response.is_redirect:
                        location = response.headers.get("Location", "")
                        current = check_url(str(current.join(location)),
                                            tls_verify=options.tls_verify)
                        continue
                    status = response.status_code
                    if status not in (200, 206):
                        raise _URLFailed(f"{shown}: HTTP {status}")
                    length = response.headers.get("Content-Length")
                    if status == 200 and length is not None and length != str(size):
                        raise _URLFailed(f"{shown}: {length[:20]} bytes offered, the "
                                         f"descriptor says {size}")
                    skip = offset if status == 200 else 0
                    for chunk in response.iter_bytes():
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk, skip = chunk[skip:], 0
                        yield chunk
                    return
        except httpx.HTTPError as exc:
            raise _URLFailed(f"{shown}: {str(exc) or type(exc).__name__}") from exc
        except BundlerError as exc:
            if isinstance(exc, _URLFailed):
                raise
            raise _URLFailed(f"{shown}: {exc}") from exc
    raise _URLFailed(f"{shown_url(url)}: more than {MAX_REDIRECTS} redirects")


class ForeignSource:
    """The sources of one non-distributable layer: the source registry, then its URLs.

    Args:
        descriptor: the layer's descriptor (``urls`` as the manifest lists them).
        registry: ``host[:port]`` of the source registry, for messages.
        from_registry: opens the blob at the source registry from a byte offset (an
            authenticated :meth:`bundler.registry.RegistryClient.iter_blob`).
        options: the source side's transport options.

    Attributes:
        served_by: the source whose bytes the last :meth:`open` streamed ("" before).
    """

    def __init__(self, descriptor: Descriptor, registry: str,
                 from_registry: Callable[[int], Iterator[bytes]],
                 options: TransportOptions) -> None:
        self.descriptor = descriptor
        self.registry = registry
        self.from_registry = from_registry
        self.options = options
        self.served_by = ""

    def open(self, offset: int) -> Generator[bytes, None, None]:
        """Chunks of the layer from ``offset``, from the first source that answers.

        A source that fails before its first byte passes the turn to the next one; a
        cut after the first byte ends the stream (the store reports it).

        Raises:
            ForeignLayerError: no source served it (every attempt named).
        """
        attempts: list[str] = []
        openers: list[tuple[str, Callable[[int], Iterator[bytes]]]] = [
            (f"registry {self.registry}", self.from_registry)]
        for url in self.descriptor.urls:
            openers.append((shown_url(url), lambda at, url=url: iter_url(
                url, at, self.descriptor.size, self.options)))
        for name, opener in openers:
            source = opener(offset)
            try:
                first = next(iter(source))
            except StopIteration:
                attempts.append(f"{name}: empty answer")
                continue
            except (RegistryError, _URLFailed) as exc:
                _close(source)
                attempts.append(str(exc) if isinstance(exc, _URLFailed) else f"{name}: {exc}")
                continue
            self.served_by = name
            try:
                yield first
                yield from source
            finally:
                _close(source)
            return
        if not self.descriptor.urls:
            attempts.append("its descriptor lists no URLs")
        raise ForeignLayerError(self.descriptor.digest, attempts)

    def explain(self, exc: BaseException) -> BaseException:
        """``exc`` (a failed store), naming the layer and the source when the bytes were
        wrong; other errors as they are."""
        if not isinstance(exc, IntegrityError) or not self.served_by:
            return exc
        where = f"non-distributable layer {self.descriptor.digest} from {self.served_by}"
        if isinstance(exc, DigestMismatchError):
            return DigestMismatchError(expected=exc.expected, actual=exc.actual, where=where)
        if isinstance(exc, SizeMismatchError):
            return SizeMismatchError(digest=exc.digest, expected=exc.expected,
                                     actual=exc.actual, where=where)
        return IntegrityError(f"{where}: {exc}", digest=exc.digest, where=where)


def _close(source: object) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()
