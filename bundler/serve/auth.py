"""HTTP Basic authentication against an htpasswd file of bcrypt hashes.

The file is what ``htpasswd -B`` writes (and what the distribution registry reads): one
``user:$2y$...`` line per user; blank lines and ``#`` comments are ignored. Only bcrypt
hashes (``$2a$``, ``$2b$``, ``$2y$``) are accepted: the others (MD5, SHA-1, crypt, plain)
are too weak to guard a registry and are refused when the file is read.

A bcrypt check takes tens of milliseconds by design, so it runs in a worker thread, and
a pair that passed is remembered by its SHA-256 (keyed with a random secret of this
process), so a client pulling a thousand blobs pays for one check.

Spec: RFC 7617 (Basic); distribution-spec "Determining Support" (401 +
``WWW-Authenticate``); distribution registry ``auth.htpasswd``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

import bcrypt
from aiohttp import web

from ..errors import BundlerError
from .app import error

__all__ = ["Htpasswd", "read_htpasswd"]

_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
_REMEMBERED_LIMIT = 1024


def read_htpasswd(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """The users and bcrypt hashes of an htpasswd file.

    Returns:
        user name -> hash bytes.

    Raises:
        BundlerError: the file cannot be read, a line is no ``user:hash``, a hash is not
        bcrypt (naming the line), or no user is listed.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundlerError(f"cannot read the htpasswd file {path}: {exc}") from None
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        if not colon or not user:
            raise BundlerError(f"{path}:{number}: expected USER:HASH")
        if not hashed.encode().startswith(_BCRYPT_PREFIXES):
            raise BundlerError(f"{path}:{number}: the hash of this user is not bcrypt; "
                               "write the file with htpasswd -B")
        users[user] = hashed.encode()
    if not users:
        raise BundlerError(f"{path}: no USER:HASH lines")
    return users


class Htpasswd:
    """Checks the ``Authorization: Basic`` header of each request.

    Args:
        users: user name -> bcrypt hash (see :func:`read_htpasswd`).
        realm: the realm named in ``WWW-Authenticate``.
    """

    def __init__(self, users: dict[str, bytes], realm: str = "bundler serve") -> None:
        self._users = users
        self._realm = realm
        self._secret = os.urandom(32)
        self._passed: set[bytes] = set()

    def _check(self, user: str, password: str) -> bool:
        hashed = self._users.get(user)
        if hashed is None:
            return False
        try:
            return bcrypt.checkpw(password.encode(), hashed)
        except ValueError:  # a hash bcrypt cannot read
            return False

    async def __call__(self, request: web.Request) -> web.Response | None:
        """None if the request carries a known user's password, else a 401 response."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, colon, password = base64.b64decode(value.strip(),
                                                         validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                colon = ""
            if colon:
                key = hmac.new(self._secret, f"{user}\0{password}".encode(),
                               hashlib.sha256).digest()
                if key in self._passed:
                    return None
                ok = await asyncio.get_running_loop().run_in_executor(
                    None, self._check, user, password)
                if ok:
                    if len(self._passed) >= _REMEMBERED_LIMIT:
                        self._passed.clear()
                    self._passed.add(key)
                    return None
        return error(401, "UNAUTHORIZED", "authentication required",
                     headers={"WWW-Authenticate": f'Basic realm="{self._realm}"'})
