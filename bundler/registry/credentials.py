"""Where credentials and TLS trust for a registry come from.

Credentials, first source that knows the registry (or repository) wins, as skopeo and
podman look them up:

1. explicit credentials (``--src-creds``, ``--src-username``/``--src-password``, ...);
2. the auth file given with ``--src-authfile``/``--dest-authfile``;
3. ``$REGISTRY_AUTH_FILE``;
4. ``$XDG_RUNTIME_DIR/containers/auth.json``;
5. ``$XDG_CONFIG_HOME/containers/auth.json``, else ``~/.config/containers/auth.json``;
6. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``.

Within one file: ``credHelpers[registry]`` names a helper for that registry; otherwise the
most specific ``auths`` key that matches (``host``, ``host:port``, ``https://host/v1/``,
``host/namespace[/repo]``; Docker Hub's ``https://index.docker.io/v1/`` also serves
``docker.io``, ``index.docker.io`` and ``registry-1.docker.io``); otherwise the default
``credsStore`` helper. An entry holds ``auth`` (base64 ``user:password``), or
``username``/``password``, and/or ``identitytoken`` (an OAuth2 refresh token). An empty
entry means no credentials. A helper ``docker-credential-NAME`` is run as ``NAME get``
with the server URL on stdin and answers ``{"Username", "Secret"}``; the user name
``<token>`` marks the secret as an identity token. A helper that is not on ``PATH`` is a
warning (logged once per helper) and no credentials from it: access goes on anonymously
unless a later source knows the registry.

``bundler login`` writes to :func:`default_authfile` (see :mod:`bundler.authfile`).

Spec: containers-auth.json(5); docker ``config.json`` and docker-credential-helpers
protocol. Secrets never appear in ``repr()``, logs or errors.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundlerError

__all__ = [
    "DOCKER_HUB_AUTH_KEY",
    "Credentials",
    "Keychain",
    "default_authfile",
    "helper_credentials",
    "load_authfile",
    "lookup_credentials",
    "normalize_key",
    "parse_creds",
]

log = logging.getLogger("bundler.credentials")

#: Docker Hub's legacy auth file key; docker login writes it, helpers expect it.
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT_S = 60.0
_TOKEN_USER = "<token>"
_missing_helpers: set[str] = set()
_missing_lock = threading.Lock()


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
    """Parse ``USER:PASSWORD`` as given to ``--src-creds``/``--dest-creds``.

    Raises:
        BundlerError: no ``:``, or an empty user name.
    """
    user, colon, password = text.partition(":")
    if not user or not colon:
        raise BundlerError("credentials must look like USER:PASSWORD")
    return Credentials(user, password)


def normalize_key(key: str) -> str:
    """An auth file key or registry name in the form keys are compared in.

    ``https://host/v1/`` -> ``host``; ``host/ns/repo/`` -> ``host/ns/repo``; Docker Hub's
    names -> ``docker.io``.

    Spec: containers-auth.json(5), "auths".
    """
    key = key.strip()
    if "://" in key:
        key = key.split("://", 1)[1].split("/", 1)[0]
    host, sep, path = key.rstrip("/").partition("/")
    host = host.lower()
    if host in _HUB_NAMES:
        host = "docker.io"
    return host + sep + path


def _server_url(registry: str) -> str:
    """The server URL a credential helper is asked about (docker's convention)."""
    return DOCKER_HUB_AUTH_KEY if registry == "docker.io" else registry


def load_authfile(path: str | os.PathLike[str]) -> dict:
    """Read a docker ``config.json`` / containers ``auth.json``.

    Returns:
        The parsed JSON object.

    Raises:
        BundlerError: the file cannot be read or is not a JSON object.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not valid JSON"
        if isinstance(exc, RecursionError):  # arrays or objects nested thousands deep
            reason = "JSON nested too deeply"
        raise BundlerError(f"cannot read auth file {path}: {reason}") from exc
    if not isinstance(data, dict):
        raise BundlerError(f"auth file {path} is not a JSON object")
    return data


def helper_credentials(name: str, registry: str) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` for the credentials of ``registry``.

    Args:
        name: the helper name from ``credHelpers``/``credsStore``.
        registry: the normalized registry (``docker.io`` is asked as
            ``https://index.docker.io/v1/``).

    Returns:
        Credentials, or None when the helper knows none or is not on ``PATH`` (then a
        warning is logged, once per helper).

    Raises:
        BundlerError: the helper fails or answers something else than JSON.

    Spec: docker-credential-helpers protocol ("get").
    """
    program = f"docker-credential-{name}"
    exe = shutil.which(program)
    server = _server_url(registry)
    if exe is None:
        with _missing_lock:
            first = program not in _missing_helpers
            _missing_helpers.add(program)
        if first:
            log.warning("credential helper %s (for %r) is not on PATH; going on without "
                        "its credentials (anonymous access)", program, registry)
        return None
    try:
        proc = subprocess.run([exe, "get"], input=server.encode(), capture_output=True,
                              timeout=_HELPER_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BundlerError(f"credential helper {program} (for {registry}) failed to run: "
                           f"{type(exc).__name__}") from exc
    if proc.returncode != 0:
        if b"credentials not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise BundlerError(f"credential helper {program} (for {registry}) failed "
                           f"with exit status {proc.returncode}")
    try:
        answer = json.loads(proc.stdout)
        user, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    except (ValueError, AttributeError, RecursionError) as exc:
        raise BundlerError(f"credential helper {program} (for {registry}) did not answer "
                           "with a JSON object") from exc
    if user == _TOKEN_USER:
        return Credentials(identity_token=secret) if secret else None
    return Credentials(user, secret) or None


def _decode_entry(entry: dict, key: str) -> Credentials | None:
    user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundlerError(f"auth entry {key!r} has an invalid 'auth' value") from exc
        user, _, password = decoded.partition(":")
    token = str(entry.get("identitytoken") or "")
    return Credentials(user, password, token) or None


def lookup_credentials(config: dict, registry: str, repository: str = "") -> Credentials | None:
    """Find credentials for ``registry`` (and ``repository``) in one parsed auth file.

    Order: ``credHelpers[registry]``, then the most specific matching ``auths`` key, then
    the ``credsStore`` helper. An empty ``auths`` entry means none (docker leaves such
    entries next to a ``credsStore``).

    Args:
        config: the parsed file.
        registry: ``host[:port]`` (``docker.io`` and its aliases are one registry).
        repository: the repository path, for ``host/namespace[/repo]`` keys.

    Returns:
        Credentials, or None when the file knows none for this registry.

    Raises:
        BundlerError: a malformed entry, or a failing helper.

    Spec: containers-auth.json(5).
    """
    registry = normalize_key(registry)
    for key, name in (config.get("credHelpers") or {}).items():
        if name and normalize_key(key) == registry:
            return helper_credentials(str(name), registry)
    wanted = f"{registry}/{repository}" if repository else registry
    best: tuple[int, str, dict] | None = None
    for key, entry in (config.get("auths") or {}).items():
        norm = normalize_key(key)
        if isinstance(entry, dict) and (wanted == norm or wanted.startswith(norm + "/")) and (
            best is None or len(norm) > best[0]
        ):
            best = (len(norm), key, entry)
    creds = _decode_entry(best[2], best[1]) if best else None
    if creds is None and config.get("credsStore"):
        return helper_credentials(str(config["credsStore"]), registry)
    return creds


def _env_authfiles(environ: Mapping[str, str]) -> list[Path]:
    paths = []
    if environ.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(environ["REGISTRY_AUTH_FILE"]))
    if environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = (Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME")
                   else _home(environ) / ".config")
    paths.append(config_home / "containers" / "auth.json")
    if environ.get("DOCKER_CONFIG"):
        paths.append(Path(environ["DOCKER_CONFIG"]) / "config.json")
    else:
        paths.append(_home(environ) / ".docker" / "config.json")
    return paths


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ["HOME"]) if environ.get("HOME") else Path.home()


def default_authfile(environ: Mapping[str, str] | None = None) -> Path:
    """The file ``bundler login``/``logout`` use without ``--authfile``.

    ``$REGISTRY_AUTH_FILE``, else ``$XDG_RUNTIME_DIR/containers/auth.json``, else
    ``~/.docker/config.json``.
    """
    environ = os.environ if environ is None else environ
    if environ.get("REGISTRY_AUTH_FILE"):
        return Path(environ["REGISTRY_AUTH_FILE"])
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    return _home(environ) / ".docker" / "config.json"


class Keychain:
    """Resolve the credentials for a registry or repository from the ordered sources.

    Files are read once and answers are cached (a helper runs once per registry).
    Thread-safe.

    Args:
        credentials: explicit credentials for every registry, or None.
        authfile: the ``--authfile`` path, or an already parsed auth file, or None.
        environ: environment to read paths from (default: ``os.environ`` at lookup time).
    """

    def __init__(
        self,
        credentials: Credentials | None = None,
        authfile: str | os.PathLike[str] | dict | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.credentials = credentials or None
        self.authfile = authfile
        self._environ = environ
        self._files: dict[Path, dict | None] = {}
        self._answers: dict[tuple[str, str], Credentials | None] = {}
        self._scoped: dict[str, bool] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        where = "<parsed>" if isinstance(self.authfile, dict) else self.authfile
        return f"Keychain(explicit={self.credentials is not None}, authfile={where!r})"

    def sources(self) -> list[tuple[str, dict | None]]:
        """(name, parsed file or None when absent) of every auth file, in order."""
        found: list[tuple[str, dict | None]] = []
        seen: set[Path] = set()
        if isinstance(self.authfile, dict):
            found.append(("the given auth file", self.authfile))
        elif self.authfile is not None:
            path = Path(self.authfile)
            seen.add(path)
            found.append((str(path), self._read(path, required=True)))
        environ = os.environ if self._environ is None else self._environ
        for path in _env_authfiles(environ):
            if path not in seen:
                seen.add(path)
                found.append((str(path), self._read(path, required=False)))
        return found

    def _read(self, path: Path, *, required: bool) -> dict | None:
        if path not in self._files:
            self._files[path] = load_authfile(path) if required or path.exists() else None
        return self._files[path]

    def resolve(self, registry: str, repository: str = "") -> Credentials | None:
        """The credentials for ``registry`` (``host[:port]``) and optional ``repository``.

        Returns:
            Credentials, or None for anonymous access.

        Raises:
            BundlerError: an unreadable explicit auth file, a malformed entry, a failing
            credential helper.
        """
        if self.credentials is not None:
            return self.credentials
        if repository and not self.has_repository_keys(registry):
            repository = ""  # one answer per registry: a helper runs once
        key = (normalize_key(registry), repository)
        with self._lock:
            if key in self._answers:
                return self._answers[key]
            creds = None
            for name, config in self.sources():
                creds = lookup_credentials(config, registry, repository) if config else None
                if creds is not None:
                    log.debug("credentials for %s%s: user %r from %s", registry,
                              f"/{repository}" if repository else "", creds.username, name)
                    break
            self._answers[key] = creds
            return creds

    def has_repository_keys(self, registry: str) -> bool:
        """Whether any auth file has a ``host/namespace`` key under ``registry``, so that
        credentials must be looked up per repository."""
        if self.credentials is not None:
            return False
        registry = normalize_key(registry)
        with self._lock:
            if registry not in self._scoped:
                self._scoped[registry] = any(
                    normalize_key(key).startswith(registry + "/")
                    for _, config in self.sources() if config
                    for key in (config.get("auths") or {})
                )
            return self._scoped[registry]
