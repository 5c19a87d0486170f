"""A small docker token-auth server for the registry's ``auth: token`` mode (loopback only).

Endpoints (docker "token authentication specification" and its OAuth2 variant):

* ``GET /token?service=S&scope=A&scope=B[&offline_token=true]`` with optional HTTP Basic
  credentials. Answers ``{"token", "access_token", "expires_in", "issued_at"}`` (and a
  ``refresh_token`` when ``offline_token=true`` and a user authenticated).
* ``POST /token`` form ``grant_type=password&username=&password=`` or
  ``grant_type=refresh_token&refresh_token=`` with ``service``, ``scope``, ``client_id``
  (OAuth2; docker's ``identitytoken`` is such a refresh token).

Tokens are RS256 JWTs signed with a throw-away key whose self-signed certificate is the
registry's ``rootcertbundle`` and is also carried in the JWT header ``x5c`` (what
distribution 2.8 verifies). The access claim grants what was asked for, intersected
with what the user may do (``permissions``), pull only for anonymous users.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .loopback import LoopbackServer

__all__ = ["ALL_ACTIONS", "TokenServer"]

ALL_ACTIONS = frozenset({"pull", "push", "delete", "*"})


def _make_key_and_cert() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bundler-sandbox-token-signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


class TokenServer(LoopbackServer):
    """Docker token server on 127.0.0.1 in a daemon thread.

    Args:
        users: username -> password.
        permissions: username -> allowed actions (subset of pull, push, delete, ``*``);
            users not listed may do everything.
        anonymous: allow requests without credentials (pull only).
        service: the ``service`` (JWT audience) the registry is configured with.
        issuer: the JWT ``iss``.
        expires_in: token lifetime in seconds (reported and put in ``exp``).
        response_fields: "both", "token" or "access_token": which keys the JSON carries.

    Attributes:
        requests: (method, service, scopes, user-or-None) of every token request.
        refresh_tokens: refresh token -> username (add to it or use issue_refresh_token).
    """

    def __init__(
        self,
        users: dict[str, str] | None = None,
        *,
        permissions: dict[str, set[str]] | None = None,
        anonymous: bool = False,
        service: str = "sandbox-registry",
        issuer: str = "bundler-sandbox-issuer",
        expires_in: int = 300,
        response_fields: Literal["both", "token", "access_token"] = "both",
    ) -> None:
        self.users = dict(users if users is not None else {"pusher": "push-secret"})
        self.permissions = {k: set(v) for k, v in (permissions or {}).items()}
        self.anonymous = anonymous
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.response_fields = response_fields
        self.requests: list[tuple[str, str | None, tuple[str, ...], str | None]] = []
        self.refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._key, self._cert = _make_key_and_cert()
        self._dir = tempfile.TemporaryDirectory(prefix="bundler-tokenserver-")
        self.cert_pem_path = Path(self._dir.name) / "token-signer.crt"
        self.cert_pem_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> TokenServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread.

        Returns:
            self.
        """
        owner = self

        class Handler(_TokenHandler):
            server_owner = owner

        self._serve(Handler)
        return self

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        """The realm URL the registry sends in its Bearer challenge (``url + /token``)."""
        return self.url + "/token"

    def default_credentials(self) -> tuple[str, str]:
        """Return (username, password) of the first configured user.

        Raises:
            LookupError: no users configured.
        """
        for name, password in self.users.items():
            return name, password
        raise LookupError("token server has no users")

    def issue_refresh_token(self, user: str) -> str:
        """Create a refresh token (docker ``identitytoken``) for ``user``."""
        value = "refresh-" + uuid.uuid4().hex
        with self._lock:
            self.refresh_tokens[value] = user
        return value

    # -- token logic -------------------------------------------------------------
    def check_password(self, user: str, password: str) -> bool:
        """Return whether ``password`` is the password of ``user``."""
        return user in self.users and self.users[user] == password

    def granted(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        """Return the JWT ``access`` claim for ``scopes`` given what ``user`` may do."""
        allowed = {"pull"} if user is None else self.permissions.get(user, set(ALL_ACTIONS))
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            ok = [a for a in actions if a in allowed or ("*" in allowed and a)]
            access.append({"type": kind, "name": name, "actions": ok})
        return access

    def make_token(self, user: str | None, service: str | None, scopes: list[str]) -> str:
        """Return a signed JWT for ``user`` granting ``scopes`` (as far as allowed)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service or self.service,
            "exp": now + self.expires_in,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": self.granted(user, scopes),
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": [self._x5c]})

    def token_response(self, user: str | None, service: str | None, scopes: list[str]) -> dict:
        """Return the JSON body of a successful token answer."""
        token = self.make_token(user, service, scopes)
        body: dict[str, Any] = {
            "expires_in": self.expires_in,
            "issued_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        if self.response_fields in ("both", "token"):
            body["token"] = token
        if self.response_fields in ("both", "access_token"):
            body["access_token"] = token
        return body

    def record(self, method: str, service: str | None, scopes: list[str], user: str | None) -> None:
        """Append one entry to :attr:`requests` (thread-safe)."""
        with self._lock:
            self.requests.append((method, service, tuple(scopes), user))


class _TokenHandler(BaseHTTPRequestHandler):
    server_owner: TokenServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="sandbox-token"')
        self.end_headers()
        self.wfile.write(data)

    def _basic_user(self) -> tuple[str | None, bool]:
        """Return (user, ok): user None if no credentials; ok False if they are wrong."""
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None, True
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None, False
        return user, self.server_owner.check_password(user, password)

    def do_GET(self) -> None:
        owner = self.server_owner
        parts = urlsplit(self.path)
        if parts.path != "/token":
            self._send(404, {"error": "not found"})
            return
        query = parse_qs(parts.query)
        service = query.get("service", [None])[0]
        scopes = query.get("scope", [])
        user, ok = self._basic_user()
        owner.record("GET", service, scopes, user)
        if not ok or (user is None and not owner.anonymous):
            self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            return
        body = owner.token_response(user, service, scopes)
        if user is not None and query.get("offline_token", [""])[0] == "true":
            body["refresh_token"] = owner.issue_refresh_token(user)
        self._send(200, body)

    def do_POST(self) -> None:
        owner = self.server_owner
        length = int(self.headers.get("Content-Length", "0") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        if urlsplit(self.path).path != "/token":
            self._send(404, {"error": "not found"})
            return
        service = form.get("service", [None])[0]
        scopes = " ".join(form.get("scope", [])).split()
        grant = form.get("grant_type", [""])[0]
        user: str | None = None
        ok = False
        if grant == "password":
            user = form.get("username", [""])[0]
            ok = owner.check_password(user, form.get("password", [""])[0])
        elif grant == "refresh_token":
            with owner._lock:
                user = owner.refresh_tokens.get(form.get("refresh_token", [""])[0])
            ok = user is not None
        owner.record("POST", service, scopes, user)
        if not ok:
            self._send(401, {"error": "invalid_grant"})
            return
        body = owner.token_response(user, service, scopes)
        body["access_token"] = body.get("access_token") or body.get("token")
        body["scope"] = " ".join(scopes)
        if grant == "password" and form.get("access_type", [""])[0] == "offline":
            body["refresh_token"] = owner.issue_refresh_token(user or "")
        elif grant == "refresh_token":
            body["refresh_token"] = form.get("refresh_token", [""])[0]
        self._send(200, body)
