"""Credentials and registry authentication (Basic, and Bearer tokens as httpx.Auth).

Spec: docker token authentication (``docs/spec/auth/token.md``, ``scope.md``,
``oauth.md``): a 401 answer carries ``WWW-Authenticate: Bearer realm=...,service=...,
scope=...``; the client asks the realm for a token (HTTP Basic credentials, or an OAuth2
refresh-token grant for an identity token), reads it from ``token`` or ``access_token``,
and retries with ``Authorization: Bearer <token>``. Tokens are cached per scope until
``expires_in`` (default 60 s) runs out.

Secrets never appear in ``repr()``, log lines or error messages.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .errors import AuthenticationError, BundlerError

__all__ = [
    "Credentials",
    "RegistryAuth",
    "load_authfile",
    "lookup_credentials",
    "parse_creds",
    "request_scope",
]

_TOKEN_MARGIN_S = 10.0
_DEFAULT_TOKEN_LIFETIME_S = 60.0


@dataclass(frozen=True)
class Credentials:
    """What to present to a registry or token service.

    Attributes:
        username: user name for Basic auth or the token request.
        password: its password (never shown by ``repr``).
        identity_token: an OAuth2 refresh token (docker ``identitytoken``).
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token)

    def basic_header(self) -> str:
        """The ``Authorization: Basic ...`` value."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_creds(text: str) -> Credentials:
    """Parse ``USER[:PASS]`` as given to ``--src-creds``/``--dest-creds``.

    Raises:
        BundlerError: empty user name.
    """
    user, _, password = text.partition(":")
    if not user:
        raise BundlerError("credentials must look like USER:PASSWORD")
    return Credentials(user, password)


def load_authfile(path: str | os.PathLike[str]) -> dict:
    """Read a docker ``config.json`` / containers ``auth.json``.

    Returns:
        The parsed JSON object.

    Raises:
        BundlerError: the file cannot be read or is not a JSON object.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BundlerError(f"cannot read auth file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BundlerError(f"auth file {path} is not a JSON object")
    return data


def _normalize_key(key: str) -> str:
    key = re.sub(r"^https?://", "", key).rstrip("/")
    if key.endswith("/v1") or key.endswith("/v2"):
        key = key[:-3]
    if key in ("index.docker.io", "registry-1.docker.io"):
        key = "docker.io"
    return key


def lookup_credentials(config: dict, registry: str, repository: str = "") -> Credentials | None:
    """Find the ``auths`` entry for ``registry`` (and ``repository``) in an auth file.

    Keys may be ``host``, ``host:port``, ``https://host/v1/``, or ``host/namespace[/repo]``;
    the most specific key that matches wins. Docker Hub aliases all mean ``docker.io``.

    Returns:
        Credentials, or None when no entry matches (an empty entry also means none).
    """
    auths = config.get("auths") or {}
    registry = _normalize_key(registry)
    wanted = f"{registry}/{repository}" if repository else registry
    best: tuple[int, dict] | None = None
    for key, entry in auths.items():
        norm = _normalize_key(key)
        matches = wanted == norm or wanted.startswith(norm + "/")
        if matches and isinstance(entry, dict) and (best is None or len(norm) > best[0]):
            best = (len(norm), entry)
    if best is None:
        return None
    entry = best[1]
    user, password = entry.get("username", ""), entry.get("password", "")
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundlerError(f"auth entry for {registry} has an invalid 'auth' value") from exc
    creds = Credentials(user, password, entry.get("identitytoken", ""))
    return creds or None


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

    Args:
        registry: ``host[:port]`` for messages.
        credentials: what to present, or None for anonymous access.

    Raises (from the request that triggered it):
        AuthenticationError: the token service refused or answered without a token.

    Spec: docker token authentication, ``token.md`` and ``oauth.md``.
    """

    def __init__(self, registry: str, credentials: Credentials | None = None) -> None:
        self.registry = registry
        self.credentials = credentials or Credentials()
        self._lock = threading.Lock()
        self._scheme = ""
        self._challenge: dict[str, str] = {}
        self._tokens: list[tuple[frozenset[str], str, float]] = []
        self.token_requests = 0

    def learn(self, header: str) -> None:
        """Take the scheme and realm from a ``WWW-Authenticate`` header seen on ping, so
        later requests fetch their token first instead of meeting a 401."""
        scheme, params = parse_challenge(header)
        with self._lock:
            if scheme == "bearer" and "realm" in params:
                self._scheme, self._challenge = "bearer", params
            elif scheme == "basic" and self.credentials.username:
                self._scheme = "basic"

    # -- token cache ----------------------------------------------------------------
    def _cached(self, scopes: set[str]) -> str | None:
        now = time.monotonic()
        with self._lock:
            self._tokens = [t for t in self._tokens if t[2] > now]
            for have, token, _ in self._tokens:
                if _covers(have, scopes):
                    return token
        return None

    def _store(self, scopes: set[str], token: str, lifetime_s: float) -> None:
        expires = time.monotonic() + max(lifetime_s - _TOKEN_MARGIN_S, lifetime_s / 2)
        with self._lock:
            self._tokens.append((frozenset(scopes), token, expires))

    def _forget(self, token: str) -> None:
        with self._lock:
            self._tokens = [t for t in self._tokens if t[1] != token]

    # -- token request ----------------------------------------------------------------
    def _token_request(self, scopes: set[str]) -> httpx.Request:
        realm = self._challenge.get("realm", "")
        service = self._challenge.get("service")
        creds = self.credentials
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

    def _read_token(self, response: httpx.Response, scopes: set[str]) -> str:
        response.read()
        url = str(response.request.url.copy_with(query=None))
        if response.status_code != 200:
            who = f"as {self.credentials.username!r}" if self.credentials.username else "anonymously"
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
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise AuthenticationError(
                f"{self.registry}: the token service answered without a token ({url})",
                status=response.status_code,
                url=url,
                registry=self.registry,
            )
        lifetime = body.get("expires_in") or _DEFAULT_TOKEN_LIFETIME_S
        self._store(scopes, token, float(lifetime))
        self.token_requests += 1
        return token

    # -- the flow ------------------------------------------------------------------
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scopes = request_scope(request)
        token: str | None = None
        if self._scheme == "basic" and self.credentials.username:
            request.headers["Authorization"] = self.credentials.basic_header()
        elif self._scheme == "bearer":
            token = self._cached(scopes)
            if token is None and scopes:
                token = self._read_token((yield self._token_request(scopes)), scopes)
            if token:
                request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if not self.credentials.username or self._scheme == "basic":
                return  # nothing (more) to offer: the caller reports the 401
            self._scheme = "basic"
            request.headers["Authorization"] = self.credentials.basic_header()
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
        token = self._read_token((yield self._token_request(wanted)), wanted)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request
