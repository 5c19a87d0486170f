"""Writing auth files: ``bundler login`` and ``bundler logout``.

``bundler login`` writes to the first of ``$REGISTRY_AUTH_FILE``,
``$XDG_RUNTIME_DIR/containers/auth.json`` (when ``XDG_RUNTIME_DIR`` is set) and
``~/.docker/config.json``: the file podman uses when it can, and docker's otherwise. Files
are written atomically with mode 0600.

Spec: containers-auth.json(5); docker ``config.json``.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import BundlerError
from .credentials import Credentials, default_authfile, load_authfile, normalize_key

__all__ = ["login", "logout", "remove_credentials", "store_credentials", "write_authfile"]


def write_authfile(path: str | os.PathLike[str], config: dict) -> None:
    """Write an auth file atomically with mode 0600, creating parent directories (0700).

    Raises:
        BundlerError: the file cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise BundlerError(f"cannot write auth file {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent="\t")
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BundlerError(f"cannot write auth file {path}: {exc.strerror}") from exc


def _read_for_update(path: Path) -> dict:
    return load_authfile(path) if path.exists() else {}


def store_credentials(path: str | os.PathLike[str], key: str, credentials: Credentials) -> None:
    """Record ``credentials`` under ``key`` (``host[:port][/namespace]``) in an auth file,
    replacing any entry with an equivalent key.

    Spec: containers-auth.json(5).
    """
    path = Path(path)
    config = _read_for_update(path)
    auths = config.get("auths")
    if not isinstance(auths, dict):
        auths = config["auths"] = {}
    norm = normalize_key(key)
    for old in [k for k in auths if normalize_key(k) == norm]:
        del auths[old]
    entry: dict[str, Any] = {}
    if credentials.username or credentials.password:
        raw = f"{credentials.username}:{credentials.password}".encode()
        entry["auth"] = base64.b64encode(raw).decode("ascii")
    if credentials.identity_token:
        entry["identitytoken"] = credentials.identity_token
    auths[norm] = entry
    write_authfile(path, config)


def remove_credentials(path: str | os.PathLike[str], key: str | None) -> list[str]:
    """Remove the entries for ``key`` (all of them when None) from an auth file.

    Returns:
        The keys removed (empty when there was nothing to remove; the file is untouched).
    """
    path = Path(path)
    config = _read_for_update(path)
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    norm = None if key is None else normalize_key(key)
    gone = [k for k in auths if norm is None or normalize_key(k) == norm]
    if gone:
        for old in gone:
            del auths[old]
        write_authfile(path, config)
    return gone


def login(
    target: str,
    credentials: Credentials,
    *,
    authfile: str | os.PathLike[str] | None = None,
    tls_verify: bool = True,
    cert_dir: Path | None = None,
) -> Path:
    """Check credentials against a registry, then record them in an auth file.

    Like ``podman login``: ``GET /v2/`` with the credentials (for token auth, a token is
    requested with them) must succeed before anything is written.

    Args:
        target: ``host[:port]`` or ``host[:port]/namespace[/repo]`` (a repository-scoped
            entry).
        credentials: what to store.
        authfile: the file to write; default :func:`default_authfile`.
        tls_verify, cert_dir: TLS settings for the check.

    Returns:
        The file written (mode 0600).

    Raises:
        AuthenticationError: the registry or its token service refused the credentials.
        TransportError: the registry cannot be reached. BundlerError: the file cannot be
        written.

    Spec: containers-auth.json(5); docker token authentication ``token.md``.
    """
    from .client import RegistryClient, TransportOptions

    key = normalize_key(target)
    registry = key.split("/", 1)[0]
    options = TransportOptions(credentials=credentials, tls_verify=tls_verify,
                               cert_dir=cert_dir, retries=1)
    with RegistryClient(registry, options) as client:
        client.request("GET", "/v2/", what=f"login to {registry}")
    path = Path(authfile) if authfile else default_authfile()
    store_credentials(path, key, credentials)
    return path


def logout(target: str | None, *, authfile: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove the entry for ``target`` (every entry when None) from an auth file.

    Returns:
        The keys removed.

    Raises:
        BundlerError: nothing stored for ``target``; the file cannot be read or written.

    Spec: containers-auth.json(5).
    """
    path = Path(authfile) if authfile else default_authfile()
    gone = remove_credentials(path, target)
    if target is not None and not gone:
        raise BundlerError(f"not logged in to {normalize_key(target)} (in {path})")
    return gone
