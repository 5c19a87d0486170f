"""The HTTP layer under the registry client: one ``httpx.Client`` per registry, the ping
that finds the scheme, retries, and registry error answers turned into errors.

Retries live here and only here: connection errors, timeouts and the statuses in
``RETRY_STATUSES`` are retried with exponential backoff and jitter, honouring
``Retry-After`` (seconds or an HTTP date): a backoff wait is at most ``retry_cap_s``, a
wait the registry asks for is honoured up to ``retry_max_wait_s`` (a longer one ends the
retries with an error that says so). Waits of a second or more are reported as ``wait``
events (:mod:`bundler.progress`). Bodies that cannot be sent twice (streamed uploads)
are not retried here; the upload code restarts them.

Credentials go only to their registry: a request to another origin (scheme, host,
port), such as an upload ``Location`` on a storage host, carries no ``Authorization``;
a token realm on plain http gets credentials only when plain http is allowed for it
(see :meth:`RegistrySession.may_send_credentials`).

The ping is retried like any request, once per session: when it fails, every later
request of the session fails at once with the same error, so a registry that is down
costs one round of retries, not one per image or blob.

``--debug`` (the ``bundler.http`` logger) shows every exchange and every attempt that got
no answer, with URLs stripped of secrets.

Spec: distribution-spec "API version check" (``GET /v2/``), "Error codes"; RFC 9110
``Retry-After``.
"""

from __future__ import annotations

import copy
import email.utils
import ipaddress
import logging
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx
import tenacity

from ..errors import (
    AccessDeniedError,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    RegistryError,
    TransportError,
)
from ..events import Event, Reporter
from ..oci import limits
from ..oci.reference import DOCKER_HUB, DOCKER_HUB_ENDPOINT
from .auth import RegistryAuth, parse_challenge, redact_url, request_repository
from .credentials import Credentials, Keychain
from .journal import UploadJournal
from .tls import ssl_context

__all__ = ["RETRY_STATUSES", "RegistrySession", "TransportOptions"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Largest manifest accepted, in bytes (the bundle limits live in :mod:`bundler.limits`).
MANIFEST_LIMIT = limits.MANIFEST_LIMIT
_USER_AGENT = "bundler/0.1"
_http_log = logging.getLogger("bundler.http")


@dataclass(frozen=True)
class TransportOptions:
    """How to reach registries on one side (source or destination) of a copy.

    Attributes:
        credentials: explicit credentials for every registry of this side, or None.
        authfile: a parsed docker ``config.json``/containers ``auth.json``, or None.
        keychain: where to look credentials up (see :mod:`bundler.credentials`); None
            means ``Keychain(credentials, authfile)``: the explicit values, then the
            auth files of the environment.
        tls_verify: verify TLS certificates; False also allows plain http.
        cert_dir: a directory of ``*.crt`` CAs and ``*.cert``/``*.key`` client pairs.
        retries: attempts after the first for a failed request.
        retry_delay_s: first backoff delay in seconds (doubles, with jitter).
        retry_cap_s: longest backoff wait in seconds.
        retry_max_wait_s: longest wait in seconds that a registry may ask for with
            ``Retry-After``; a longer one is not waited for (the request fails).
        timeout_s: connect/read/write timeout in seconds (waiting for a free connection of
            the pool has none).
        chunk_size: uploads above this many bytes go in PATCH chunks of this size.
        max_connections: connection pool size per registry: the per-registry cap on
            concurrent requests, whatever ``--jobs`` is.
        journal: where chunked uploads are recorded so a later run continues them
            (:class:`bundler.journal.UploadJournal`), or None.
        reporter: receives a ``wait`` event before every wait of a second or more, or
            None.
        registries: ``host[:port]`` -> the options of that registry instead of these (an
            image set's per-registry ``tls-verify``, ``cert-dir`` and ``credentials``);
            :class:`bundler.registry.pool.ClientPool` picks them.
    """

    credentials: Credentials | None = None
    authfile: dict | None = field(default=None, repr=False)
    keychain: Keychain | None = None
    tls_verify: bool = True
    cert_dir: Path | None = None
    retries: int = 4
    retry_delay_s: float = 0.5
    retry_cap_s: float = 30.0
    retry_max_wait_s: float = 300.0
    timeout_s: float = 60.0
    chunk_size: int = 64 << 20
    max_connections: int = 16
    journal: UploadJournal | None = None
    reporter: Reporter | None = field(default=None, repr=False, compare=False)
    registries: Mapping[str, TransportOptions] = field(default_factory=dict, compare=False)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _RetryableStatus) or (
        isinstance(exc, TransportError) and getattr(exc, "retryable", True)
    )


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name``, ``name:port``, ``[v6]:port`` or a bare IPv6 address)
    is a loopback host; names compare case-insensitively (``LOCALHOST`` is loopback)."""
    name = host.strip().lower()
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        pass
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the default port filled in."""
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _ssl_context(verify: bool, cert_dir: Path | None, registry: str = "") -> ssl.SSLContext | bool:
    """TLS settings: see :func:`bundler.tls.ssl_context` (certs.d per host)."""
    return ssl_context(registry, verify=verify, cert_dir=cert_dir)


def _log_response(response: httpx.Response) -> None:
    """``--debug`` line for every HTTP exchange, token requests included: no secrets."""
    if _http_log.isEnabledFor(logging.DEBUG):
        request = response.request
        _http_log.debug("%s %s -> %d", request.method, redact_url(request.url),
                        response.status_code)


def _verify_reason(exc: BaseException) -> str:
    """The verifier's reason (``unable to get local issuer certificate``) from an
    exception chain, without OpenSSL's source locations."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) and seen.verify_message:
            return str(seen.verify_message)
        seen = seen.__cause__ or seen.__context__
    return "certificate verify failed"


def _error_details(response: httpx.Response) -> tuple[tuple[str, ...], str]:
    try:
        errors = response.json().get("errors") or []
        codes = tuple(str(e.get("code", "")) for e in errors if isinstance(e, dict))
        text = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
        return codes, text
    except (ValueError, AttributeError, RecursionError, httpx.ResponseNotRead):
        return (), response.text[:200].strip() if response.is_stream_consumed else ""


#: Bytes httpcore asks the socket for per read of a response (its default is 64 KiB).
#: Blob bodies are megabytes; each read is one pass through the HTTP/1.1 parser and one
#: wake-up, and with 256 KiB reads an export of the benchmark set takes about a quarter
#: less time and CPU (``bench/bench_vs_skopeo.py``, docs/performance.md).
RESPONSE_READ_BYTES = 256 << 10


def _tune_http_reads() -> None:
    """Raise httpcore's per-read size for HTTP/1.1 responses to ``RESPONSE_READ_BYTES``
    (never lowers it). Process-wide: it is a class attribute of httpcore's connection."""
    connection = getattr(httpcore, "HTTP11Connection", None)
    if connection is not None and getattr(connection, "READ_NUM_BYTES", 0) < RESPONSE_READ_BYTES:
        connection.READ_NUM_BYTES = RESPONSE_READ_BYTES


class RegistrySession:
    """Requests to one registry: scheme, auth, retries and errors (see
    :class:`bundler.registry.RegistryClient` for the arguments and the errors raised)."""

    def __init__(self, registry: str, options: TransportOptions | None = None) -> None:
        self.registry = registry
        self.options = options or TransportOptions()
        keychain = self.options.keychain or Keychain(self.options.credentials,
                                                     self.options.authfile)
        self.auth = RegistryAuth(registry, resolve=lambda repo: keychain.resolve(registry, repo),
                                 send=self._send_token_request,
                                 may_send=self.may_send_credentials)
        self.host = DOCKER_HUB_ENDPOINT if registry == DOCKER_HUB else registry
        _tune_http_reads()
        self.http = httpx.Client(
            verify=_ssl_context(self.options.tls_verify, self.options.cert_dir, registry),
            event_hooks={"response": [_log_response]},
            # no pool timeout: with more jobs than connections a worker waits its turn for
            # as long as the transfers ahead of it take (minutes, for big layers)
            timeout=httpx.Timeout(self.options.timeout_s, connect=min(30.0, self.options.timeout_s),
                                  pool=None),
            limits=httpx.Limits(
                max_connections=self.options.max_connections,
                max_keepalive_connections=self.options.max_connections,
            ),
            follow_redirects=True,
            headers={"User-Agent": _USER_AGENT},
        )
        self._base: str | None = None
        self._ping_error: RegistryError | None = None
        self._base_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> RegistrySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if self._stop(state):  # tenacity asks for the wait before it checks the stop
            return 0.0
        if isinstance(exc, _RetryableStatus):
            after = _retry_after_s(exc.response)
            if after is not None:
                wait = after
                self._report_wait(wait, f"HTTP {exc.response.status_code} with Retry-After")
                return wait
        base = self.options.retry_delay_s * (2 ** (state.attempt_number - 1))
        wait = min(base * (0.5 + tenacity.wait.random.random()), self.options.retry_cap_s)
        self._report_wait(wait, "backing off after a failed request")
        return wait

    def _report_wait(self, wait_s: float, why: str) -> None:
        """Send a ``wait`` event (name: the registry, total: seconds) for a wait of a
        second or more."""
        if wait_s >= 1.0 and self.options.reporter is not None:
            self.options.reporter(Event("wait", self.registry, "start", total=round(wait_s),
                                        detail=f"{why}: retrying in {round(wait_s)} s"))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        """Stop after ``retries`` retries, or at once when the registry asks for a wait
        longer than ``retry_max_wait_s``."""
        if state.attempt_number > self.options.retries:
            return True
        exc = state.outcome.exception() if state.outcome else None
        return isinstance(exc, _RetryableStatus) and self._too_long(exc.response)

    def _too_long(self, response: httpx.Response) -> bool:
        after = _retry_after_s(response)
        return after is not None and after > self.options.retry_max_wait_s

    def _retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=tenacity.retry_if_exception(_retryable),
            reraise=True,
        )

    def own_origin(self, url: str | httpx.URL) -> bool:
        """Whether ``url`` is on the registry itself (same scheme, host and port as its
        base URL), so that its credentials may go with a request to it."""
        return _origin(httpx.URL(str(url))) == _origin(httpx.URL(self.base_url()))

    def may_send_credentials(self, realm: httpx.URL) -> bool:
        """Whether credentials may go to a token realm: it is https, or plain http is
        allowed for it (TLS verification is off for this side, or both the registry and
        the realm are plain-http loopback hosts).

        Spec: docker token authentication ``token.md`` (the realm).
        """
        if realm.scheme == "https" or not self.options.tls_verify:
            return True
        return bool(self._base and self._base.startswith("http://")
                    and is_loopback(realm.host))

    def _once(self, method: str, url: str, what: str, stream: bool, **kw: Any) -> httpx.Response:
        try:
            request = self.http.build_request(method, url, **kw)
            # another origin (an upload Location on a storage host) gets no credentials
            auth = self.auth if self.own_origin(request.url) else None
            response = self.http.send(request, auth=auth, stream=stream)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, url, what, method) from exc
        except httpx.StreamConsumed as exc:  # a 401 asked to resend a streamed body
            raise TransportError(f"{what}: the registry asked for credentials again mid-request",
                                 url=url.split("?")[0], registry=self.registry) from exc
        if response.status_code in RETRY_STATUSES:
            response.read()
            response.close()
            raise _RetryableStatus(response)
        return response

    def _send_token_request(self, request: httpx.Request) -> httpx.Response:
        """Send a token request of the auth flow with the retries of registry requests.

        Returns:
            The read response; a retryable status (5xx, 429) once the retries are spent.

        Raises:
            TransportError: the token service could not be reached.

        Spec: docker token authentication ``token.md``.
        """
        url = str(request.url)
        what = f"token request to {url.split('?')[0]}"

        def once() -> httpx.Response:
            try:
                response = self.http.send(request)
            except httpx.TransportError as exc:
                raise self._transport_error(exc, url, what, request.method) from exc
            if response.status_code in RETRY_STATUSES:
                raise _RetryableStatus(response)
            return response

        try:
            return self._retrying()(once)
        except _RetryableStatus as exc:
            return exc.response
        except TransportError as exc:
            exc.retryable = False  # type: ignore[attr-defined]  # retried here already
            raise

    def _transport_error(self, exc: Exception, url: str, what: str,
                         method: str = "GET") -> TransportError:
        """The :class:`TransportError` for an attempt that got no answer (logged)."""
        text = str(exc) or type(exc).__name__
        _http_log.debug("%s %s -> no answer: %s", method, redact_url(url), text)
        tls = "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text
        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            message = (f"{what}: {self.registry} stalled: no data moved for "
                       f"{self.options.timeout_s:g} s")
        elif "CERTIFICATE_VERIFY_FAILED" in text:
            message = (
                f"{what}: the TLS certificate of {self.registry} is not trusted "
                f"({_verify_reason(exc)}); pass its CA with --src-cert-dir/--dest-cert-dir "
                f"(or put it in /etc/containers/certs.d/{self.registry}/), or turn "
                "verification off with --src-tls-verify=false/--dest-tls-verify=false"
            )
        else:
            message = f"{what}: cannot reach {self.registry}: {text}"
        error = TransportError(message, url=url.split("?")[0], registry=self.registry)
        error.retryable = not tls  # type: ignore[attr-defined]
        error.certificate = "CERTIFICATE_VERIFY_FAILED" in text  # type: ignore[attr-defined]
        return error

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        ok: Iterable[int] = (200,),
        stream: bool = False,
        retry: bool = True,
        **kw: Any,
    ) -> httpx.Response:
        """Send a request (retried when ``retry``), returning a response whose status is in
        ``ok``; else raise the matching :class:`RegistryError`.

        Args:
            method: HTTP method.
            path: a path below the registry base URL, or an absolute URL.
            what: a phrase for error messages, e.g. ``"manifest host/repo:tag"``.
            ok: statuses that are not errors.
            stream: leave the body unread (caller closes the response).
            retry: retry transient failures (only for bodies that can be resent).
        """
        url = path if path.startswith(("http://", "https://")) else self.base_url() + path
        try:
            if retry:
                response = self._retrying()(self._once, method, url, what, stream, **kw)
            else:
                response = self._once(method, url, what, stream, **kw)
        except _RetryableStatus as exc:
            response = exc.response
        if response.status_code not in ok:
            if stream:
                response.read()
                response.close()
            raise self.error(response, what)
        return response

    def error(self, response: httpx.Response, what: str) -> RegistryError:
        """The :class:`RegistryError` for an error response."""
        status = response.status_code
        codes, text = _error_details(response)
        cls = {401: AuthenticationError, 403: AccessDeniedError, 404: NotFoundError,
               429: RateLimitError}.get(status, RegistryError)
        detail = f" {', '.join(c for c in codes if c)}" if any(codes) else ""
        detail += f": {text}" if text else ""
        if self._too_long(response):
            detail += (f" (asked to retry after {_retry_after_s(response):.0f} s, longer than "
                       f"the longest wait allowed, --retry-max-wait "
                       f"{self.options.retry_max_wait_s:g} s)")
        elif status == 429:
            detail += f" (rate limited; gave up after {self.options.retries} retries)"
        if status == 401:  # the registry's own words add nothing to this
            user = self.auth.credentials_for(request_repository(response.request)).username
            _, challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            who = f"{user!r}" if user else "anonymous access"
            if challenge.get("error") == "insufficient_scope":
                detail = (f" (access denied: the token for {who} does not grant "
                          f"{challenge.get('scope') or 'this request'})")
            elif user:
                detail = f" (authentication failed: credentials for {who} refused)"
            else:
                detail = " (authentication failed: no credentials given)"
        url = str(response.request.url.copy_with(query=None))
        return cls(
            f"{what}: {self.registry} answered HTTP {status}{detail}",
            status=status,
            codes=codes,
            url=url,
            registry=self.registry,
        )

    def base_url(self) -> str:
        """``scheme://host`` of the registry, found once with ``GET /v2/`` (the ping).

        https is tried first; plain http only for loopback hosts or with tls_verify off.
        A failed ping is remembered: later calls raise the same error at once.

        Raises:
            TransportError: no scheme answered; RegistryError: not a registry.
        """
        if self._base is not None:
            return self._base
        with self._base_lock:
            if self._base is not None:
                return self._base
            if self._ping_error is not None:
                raise copy.copy(self._ping_error) from self._ping_error
            try:
                self._base = self._find_base()
            except RegistryError as exc:
                self._ping_error = exc
                raise
            return self._base

    def _find_base(self) -> str:
        schemes = ["https"]
        if not self.options.tls_verify or is_loopback(self.host):
            schemes.append("http")
        last: Exception | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            try:
                response = self._retrying()(self._ping, url, scheme != schemes[-1])
            except (TransportError, _RetryableStatus) as exc:
                if getattr(exc, "certificate", False):
                    raise  # it speaks TLS: plain http would only hide the reason
                last = exc
                continue
            if response.status_code == 401:
                self.auth.learn(response.headers.get("WWW-Authenticate", ""))
            elif response.status_code != 200:
                raise self.error(response, f"ping {self.registry}")
            return f"{scheme}://{self.host}"
        if isinstance(last, _RetryableStatus):
            raise self.error(last.response, f"ping {self.registry}")
        raise last  # type: ignore[misc]

    def _ping(self, url: str, probing: bool) -> httpx.Response:
        try:
            response = self.http.get(url)
        except httpx.TransportError as exc:
            error = self._transport_error(exc, url, f"ping {self.registry}")
            if probing:  # try the next scheme at once instead of retrying this one
                error.retryable = False  # type: ignore[attr-defined]
            raise error from exc
        if response.status_code in RETRY_STATUSES:
            raise _RetryableStatus(response)
        return response
