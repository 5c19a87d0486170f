"""Registry authentication (Basic, and Bearer tokens as httpx.Auth).

Where the credentials come from lives in :mod:`bundler.credentials` (its names are
re-exported here).

Spec: docker token authentication (``docs/spec/auth/token.md``, ``scope.md``,
``oauth.md``): a 401 answer carries ``WWW-Authenticate: Bearer realm=...,service=...,
scope=...``; the client asks the realm for a token (HTTP Basic credentials, or an OAuth2
refresh-token grant for an identity token), reads it from ``token`` or ``access_token``,
and retries with ``Authorization: Bearer <token>``. Tokens are cached per scope until
``expires_in`` (default 60 s) runs out.

Token requests go through ``send`` (given by :class:`bundler.transport.RegistrySession`):
a direct call through the registry's ``httpx.Client`` with the client's retries (5xx,
429 and ``Retry-After`` honoured). That call is made under a lock per (credentials,
scopes), so N threads that start at once make one token request; holding a lock across
a ``yield`` of the auth flow would not be safe, since httpx may abandon a flow. Without
``send`` the token request is yielded through the flow, once, without single flight.

Secrets never appear in ``repr()``, log lines or error messages.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Generator, Iterable

import httpx

from ..errors import AuthenticationError, RateLimitError, RegistryError
from .credentials import Credentials

__all__ = [
    "RegistryAuth",
    "request_repository",
    "redact_url",
    "request_scope",
]

log = logging.getLogger("bundler.auth")

_TOKEN_MARGIN_S = 10.0
_DEFAULT_TOKEN_LIFETIME_S = 60.0


_PARAM_RE = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split ``WWW-Authenticate`` into a lowercase scheme and its parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


def request_scope(request: httpx.Request) -> set[str]:
    """The token scopes a registry request needs (docker token ``scope.md``).

    ``GET``/``HEAD`` on ``/v2/<name>/...`` need ``repository:<name>:pull``; other methods
    ``pull,push``; a cross-repository mount also needs ``pull`` on the ``from`` repository.
    """
    path = request.url.path
    match = re.match(r"^/v2/(.+?)/(manifests|blobs|tags|referrers)/", path + "/")
    if not match:
        return {"registry:catalog:*"} if path.startswith("/v2/_catalog") else set()
    name = match.group(1)
    actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
    scopes = {f"repository:{name}:{actions}"}
    source = request.url.params.get("from")
    if source:
        scopes.add(f"repository:{source}:pull")
    return scopes


def request_repository(request: httpx.Request) -> str:
    """The repository a registry request is about (``""`` for ``/v2/``, the catalog)."""
    match = re.match(r"^/v2/(.+?)/(manifests|blobs|tags|referrers)/", request.url.path + "/")
    return match.group(1) if match else ""


def _split_scope(scope: str) -> tuple[str, set[str]]:
    resource, _, actions = scope.rpartition(":")
    return resource, set(actions.split(",")) if actions else set()


def _covers(have: Iterable[str], need: Iterable[str]) -> bool:
    granted: dict[str, set[str]] = {}
    for scope in have:
        resource, actions = _split_scope(scope)
        granted.setdefault(resource, set()).update(actions)
    for scope in need:
        resource, actions = _split_scope(scope)
        if not actions <= granted.get(resource, set()) and "*" not in granted.get(resource, ()):
            return False
    return True


class RegistryAuth(httpx.Auth):
    """Authentication for one registry: learns the scheme from the first challenge.

    Basic: credentials are sent from then on. Bearer: a token is fetched for the scopes
    of each request (the challenge's scope joined with :func:`request_scope`), cached
    until shortly before it expires, and fetched before later requests of the same scope
    without a 401 round trip. A 401 with a cached token gets one new token.

    Credentials may differ per repository (auth file keys like ``host/namespace``): with
    ``resolve``, each request presents what ``resolve(repository)`` returns, and tokens
    are cached per credentials.

    Args:
        registry: ``host[:port]`` for messages.
        credentials: what to present, or None for anonymous access.
        resolve: repository -> credentials (``""`` for registry-wide requests); called
            once per repository; overrides ``credentials``.
        send: sends a token request and returns its (read) response, retrying transient
            failures; with it, a token is fetched once for threads that need the same
            scopes at the same time. None: the request is yielded through the flow.
        may_send: realm URL -> whether credentials may go there (a plain-http realm of
            a registry reached over https may not get them); None: always. Withheld
            credentials make the token request anonymous, with a warning.

    Raises (from the request that triggered it):
        AuthenticationError: the token service refused or answered without a token.
        RegistryError: the token service failed (5xx) past the retries; RateLimitError
            for a 429.

    Spec: docker token authentication, ``token.md`` and ``oauth.md``.
    """

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None = None,
        *,
        resolve: Callable[[str], Credentials | None] | None = None,
        send: Callable[[httpx.Request], httpx.Response] | None = None,
        may_send: Callable[[httpx.URL], bool] | None = None,
    ) -> None:
        self.registry = registry
        self._send = send
        self._may_send = may_send
        self._withheld: set[str] = set()
        self._fetching: dict[tuple[Credentials, frozenset[str]], threading.Lock] = {}
        self._fixed = credentials or Credentials()
        self._resolve = resolve
        self._by_repository: dict[str, Credentials] = {}
        self._lock = threading.Lock()
        self._scheme = ""
        self._challenge: dict[str, str] = {}
        self._tokens: list[tuple[Credentials, frozenset[str], str, float]] = []

    @property
    def credentials(self) -> Credentials:
        """The registry-wide credentials (those of requests outside any repository)."""
        return self.credentials_for("")

    def credentials_for(self, repository: str) -> Credentials:
        """The credentials presented for requests on ``repository``.

        Raises:
            BundlerError: from the resolver (unreadable auth file, failing helper).
        """
        if self._resolve is None:
            return self._fixed
        with self._lock:
            found = self._by_repository.get(repository)
        if found is None:
            found = self._resolve(repository) or Credentials()
            with self._lock:
                self._by_repository[repository] = found
        return found

    def learn(self, header: str) -> None:
        """Take the scheme and realm from a ``WWW-Authenticate`` header seen on ping, so
        later requests fetch their token first instead of meeting a 401."""
        scheme, params = parse_challenge(header)
        with self._lock:
            if scheme == "bearer" and "realm" in params:
                self._scheme, self._challenge = "bearer", params
            elif scheme == "basic":
                self._scheme = "basic"

    # -- token cache ----------------------------------------------------------------
    def _cached(self, creds: Credentials, scopes: set[str]) -> str | None:
        now = time.monotonic()
        with self._lock:
            self._tokens = [t for t in self._tokens if t[3] > now]
            for who, have, token, _ in self._tokens:
                if who == creds and _covers(have, scopes):
                    return token
        return None

    def _store(self, creds: Credentials, scopes: set[str], token: str, lifetime_s: float) -> None:
        expires = time.monotonic() + max(lifetime_s - _TOKEN_MARGIN_S, lifetime_s / 2)
        with self._lock:
            self._tokens.append((creds, frozenset(scopes), token, expires))

    def _forget(self, token: str) -> None:
        with self._lock:
            self._tokens = [t for t in self._tokens if t[2] != token]

    # -- token request ----------------------------------------------------------------
    def _presented(self, creds: Credentials) -> Credentials:
        """``creds``, or none when they may not go to the current realm (warned once)."""
        realm = self._challenge.get("realm", "")
        if not creds or self._may_send is None or self._may_send(httpx.URL(realm)):
            return creds
        with self._lock:
            first = realm not in self._withheld
            self._withheld.add(realm)
        if first:
            log.warning("%s: not sending credentials to the token service %s: it is plain "
                        "http while the registry is reached over https (plain http is allowed "
                        "with --src-tls-verify=false/--dest-tls-verify=false); asking for an "
                        "anonymous token", self.registry, redact_url(realm))
        return Credentials()

    def _token_request(self, creds: Credentials, scopes: set[str]) -> httpx.Request:
        realm = self._challenge.get("realm", "")
        service = self._challenge.get("service")
        creds = self._presented(creds)
        if creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "bundler",
                "scope": " ".join(sorted(scopes)),
            }
            if service:
                form["service"] = service
            return httpx.Request("POST", realm, data=form)
        params = [("scope", s) for s in sorted(scopes)]
        if service:
            params.insert(0, ("service", service))
        headers = {"Authorization": creds.basic_header()} if creds.username else {}
        if creds.username:
            params.append(("account", creds.username))
        return httpx.Request("GET", realm, params=params, headers=headers)

    def _fetch_token(self, creds: Credentials, scopes: set[str]) -> str:
        """A token for ``scopes``: from the cache, or fetched once through ``send`` while
        other threads that need the same scopes wait for it (single flight)."""
        assert self._send is not None
        key = (creds, frozenset(scopes))
        with self._lock:
            flight = self._fetching.setdefault(key, threading.Lock())
        with flight:
            token = self._cached(creds, scopes)
            if token is None:
                response = self._send(self._token_request(creds, scopes))
                token = self._read_token(response, creds, scopes)
        return token

    def _read_token(self, response: httpx.Response, creds: Credentials, scopes: set[str]) -> str:
        response.read()
        url = str(response.request.url.copy_with(query=None))
        if response.status_code in (408, 429) or response.status_code >= 500:
            cls = RateLimitError if response.status_code == 429 else RegistryError
            raise cls(
                f"{self.registry}: the token service failed (HTTP {response.status_code} "
                f"from {url})",
                status=response.status_code,
                url=url,
                registry=self.registry,
            )
        if response.status_code != 200:
            if creds.identity_token:
                who = "the identity token"
            else:
                who = f"as {creds.username!r}" if creds.username else "anonymously"
            if self._presented(creds) != creds:
                who = (f"anonymously (credentials withheld: {url} is plain http while "
                       f"{self.registry} is reached over https; plain http is allowed with "
                       "--src-tls-verify=false/--dest-tls-verify=false)")
            raise AuthenticationError(
                f"{self.registry}: the token service refused {who} "
                f"(HTTP {response.status_code} from {url})",
                status=response.status_code,
                url=url,
                registry=self.registry,
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError, RecursionError):
            token = None
        if not token:
            raise AuthenticationError(
                f"{self.registry}: the token service answered without a token ({url})",
                status=response.status_code,
                url=url,
                registry=self.registry,
            )
        lifetime = _lifetime_s(body.get("expires_in"))
        log.debug("token for %s: scopes %s, valid %s s", self.registry,
                  " ".join(sorted(scopes)) or "(none)", lifetime)
        self._store(creds, scopes, token, lifetime)
        return token

    def _token(self, creds: Credentials, scopes: set[str]
               ) -> Generator[httpx.Request, httpx.Response, str]:
        """Get a token inside the flow: through ``send``, else by yielding the request."""
        if self._send is not None:
            return self._fetch_token(creds, scopes)
        return self._read_token((yield self._token_request(creds, scopes)), creds, scopes)

    # -- the flow ------------------------------------------------------------------
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scopes = request_scope(request)
        creds = self.credentials_for(request_repository(request))
        token: str | None = None
        if self._scheme == "basic" and creds.username:
            request.headers["Authorization"] = creds.basic_header()
        elif self._scheme == "bearer":
            token = self._cached(creds, scopes)
            if token is None and scopes:
                token = yield from self._token(creds, scopes)
            if token:
                request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if not creds.username or "Authorization" in request.headers:
                return  # nothing (more) to offer: the caller reports the 401
            self._scheme = "basic"
            request.headers["Authorization"] = creds.basic_header()
            yield request
            return
        if scheme != "bearer" or "realm" not in params:
            return
        if token:
            self._forget(token)
        with self._lock:
            self._scheme = "bearer"
            self._challenge = params
        wanted = set(scopes)
        if params.get("scope"):
            wanted.update(params["scope"].split(" "))
        token = yield from self._token(creds, wanted)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _lifetime_s(value: object) -> float:
    """``expires_in`` in seconds; the default (60 s) for a missing, non-numeric, or
    non-positive value."""
    try:
        lifetime = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return _DEFAULT_TOKEN_LIFETIME_S
    return lifetime if math.isfinite(lifetime) and lifetime > 0 else _DEFAULT_TOKEN_LIFETIME_S


_PLAIN_PARAMS = frozenset({"scope", "service", "account", "digest", "mount", "from", "n",
                           "last", "client_id", "offline_token", "artifactType"})


def redact_url(url: httpx.URL | str) -> str:
    """A URL fit for logs: no user info, query values other than known-harmless ones
    replaced by ``***`` (upload state, signatures, tokens)."""
    url = httpx.URL(str(url))
    params = [(k, v if k in _PLAIN_PARAMS else "***") for k, v in url.params.multi_items()]
    return str(url.copy_with(userinfo=b"", query=None).copy_merge_params(params)) if params \
        else str(url.copy_with(userinfo=b"", query=None))
