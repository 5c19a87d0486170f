"""Start and stop a real CNCF distribution registry (``/usr/bin/docker-registry``) on loopback.

The registry runs as a child process with its own YAML config, filesystem storage and log
file under a work directory. Optional modes: htpasswd (bcrypt) basic auth, TLS with a
certificate issued by a ``trustme.CA``, and docker token auth backed by
:class:`bundler.sandbox.tokenserver.TokenServer`.

Every HTTP request the registry handles is written once to its access log (gorilla
combined log format on stdout); :meth:`LocalRegistry.requests` parses it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import yaml

if TYPE_CHECKING:
    import trustme

    from bundler.sandbox.tokenserver import TokenServer

__all__ = ["DISTRIBUTION_V3_BINARY", "REGISTRY_BINARY", "SPARSE_INDEX_VALIDATION",
           "LocalRegistry", "RegistryStartError", "free_port", "start_registry"]

REGISTRY_BINARY = "/usr/bin/docker-registry"
#: CNCF distribution v3 (``cmd/registry``), built by ``scripts/build-tools.sh``: the first
#: release with an opt-in for image indexes whose children are not all in the repository.
DISTRIBUTION_V3_BINARY = str(Path(__file__).resolve().parents[2] /
                             ".tools/bin/distribution-registry")
#: ``extra_config`` for distribution v3 that accepts a sparse index: only an index's
#: ``linux/amd64`` children must be in the repository (``validation.manifests.indexes``).
SPARSE_INDEX_VALIDATION: dict[str, Any] = {"validation": {"manifests": {"indexes": {
    "platforms": "list", "platformlist": [{"os": "linux", "architecture": "amd64"}]}}}}

# 127.0.0.1 - - [30/Nov/2026:16:44:26 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "python-httpx/0.28.1"
_ACCESS_RE = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) ')


class RegistryStartError(RuntimeError):
    """The registry process did not answer ``GET /v2/`` in time (message has the log tail)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hash_password(password: str) -> str:
    """Return a bcrypt hash (the only kind the registry's htpasswd accepts)."""
    try:
        import bcrypt

        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    except ImportError:  # pragma: no cover - glibc/libxcrypt fallback
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

            return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))


@dataclass
class LocalRegistry:
    """A running registry process on 127.0.0.1.

    Attributes:
        host: ``127.0.0.1:PORT`` (the registry part of references).
        url: ``http://127.0.0.1:PORT`` or ``https://...`` when TLS is on.
        root: the filesystem storage root directory.
        log_path: file receiving the process's stdout and stderr.
        cert_dir: ``workdir/certs.d/127.0.0.1:PORT`` holding ``ca.crt`` (TLS only).
        ca_pem: path of the CA certificate PEM (TLS only).
        username: a user allowed to push (htpasswd or token mode), else None.
        password: that user's password, else None.
        process: the ``subprocess.Popen`` of the registry.
    """

    host: str
    url: str
    root: Path
    log_path: Path
    cert_dir: Path | None
    ca_pem: Path | None
    username: str | None
    password: str | None
    process: subprocess.Popen[bytes] | None = field(repr=False, default=None)

    def stop(self) -> None:
        """Terminate the registry process (kill it after 5 s); idempotent."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def repo_prefix(self) -> str:
        """``127.0.0.1:PORT/`` — prepend to a repository to make a reference."""
        return self.host + "/"

    def ssl_context(self) -> ssl.SSLContext | bool:
        """Return an SSL context trusting the sandbox CA, or True for plain http."""
        if self.ca_pem is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_pem))

    def client(self, **kwargs: Any) -> httpx.Client:
        """Return an httpx client with the right TLS trust and credentials for this registry.

        Basic credentials are sent for htpasswd registries; for token registries the
        client answers Bearer challenges through the token server (see
        :class:`bundler.sandbox.images.SandboxAuth`).

        Args:
            **kwargs: extra ``httpx.Client`` arguments (override the defaults).

        Returns:
            A new client; the caller closes it.
        """
        from bundler.sandbox.push import SandboxAuth

        opts: dict[str, Any] = {"verify": self.ssl_context(), "timeout": 30.0}
        if self.username is not None and self.password is not None:
            opts["auth"] = SandboxAuth(self.username, self.password, verify=opts["verify"])
        opts.update(kwargs)
        return httpx.Client(**opts)

    def _read_log(self) -> list[tuple[str, str, int]]:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        out: list[tuple[str, str, int]] = []
        for line in text.splitlines():
            match = _ACCESS_RE.match(line)
            if match:
                out.append((match.group(1), match.group(2), int(match.group(3))))
        return out

    def access_log(self, since: int = 0, settle_s: float = 0.05) -> list[tuple[str, str, int]]:
        """Return (method, uri, status) of each request handled, oldest first.

        The registry writes an access line just after the response, so this waits until
        the log stops growing for ``settle_s`` seconds (at most 2 s).

        Args:
            since: a value from :meth:`mark`; only later requests are returned.
            settle_s: quiet time to wait for, in seconds.

        Returns:
            One tuple per HTTP request, URI with query string.
        """
        entries = self._read_log()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(settle_s)
            again = self._read_log()
            if len(again) == len(entries):
                break
            entries = again
        return entries[since:]

    def requests(self, since: int = 0) -> list[tuple[str, str]]:
        """Return (METHOD, uri-with-query) of each HTTP request handled since ``since``.

        Args:
            since: a value returned by :meth:`mark` (0 means from the start).

        Returns:
            One tuple per request, in log order.
        """
        return [(m, u) for m, u, _ in self.access_log(since)]

    def mark(self) -> int:
        """Return a position in the access log to pass as ``since`` later."""
        return len(self.access_log())

    def log_tail(self, lines: int = 40) -> str:
        """Return the last ``lines`` lines of the process log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _config(workdir: Path, port: int) -> dict[str, Any]:
    return {
        "version": 0.1,
        "log": {
            "level": "info",
            "formatter": "text",
            "accesslog": {"disabled": False},
            "fields": {"service": "registry"},
        },
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": "bundler-sandbox-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "health": {"storagedriver": {"enabled": False}},
    }


def start_registry(
    workdir: Path,
    *,
    htpasswd: tuple[str, str] | None = None,
    tls: trustme.CA | None = None,
    token: TokenServer | None = None,
    extra_config: dict[str, Any] | None = None,
    timeout_s: float = 10.0,
    binary: str = REGISTRY_BINARY,
) -> LocalRegistry:
    """Start a registry on a free loopback port and wait until ``GET /v2/`` answers.

    Args:
        workdir: directory for config, storage, certificates and the log (created).
        htpasswd: (username, password) to require with HTTP basic auth.
        tls: CA issuing the server certificate for 127.0.0.1/localhost; URL becomes https.
        token: token server for ``auth: token`` mode (must be started); the registry's
            ``username``/``password`` become the token server's first user.
        extra_config: dict merged (shallowly per top-level key) into the YAML config.
        timeout_s: how long to wait for the registry to come up.
        binary: the registry program (:data:`REGISTRY_BINARY`, or
            :data:`DISTRIBUTION_V3_BINARY`, which reads the same config).

    Returns:
        The running :class:`LocalRegistry`.

    Raises:
        RegistryStartError: the binary is missing or the registry did not come up.
    """
    if not os.access(binary, os.X_OK):
        raise RegistryStartError(f"{binary} not found (apt-get install docker-registry; "
                                 "bash scripts/build-tools.sh for distribution v3)")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    last_error: RegistryStartError | None = None
    for _attempt in range(3):
        try:
            return _start_once(workdir, htpasswd, tls, token, extra_config, timeout_s,
                               binary)
        except RegistryStartError as exc:  # port race: try another port
            last_error = exc
    assert last_error is not None
    raise last_error


def _start_once(
    workdir: Path,
    htpasswd: tuple[str, str] | None,
    tls: trustme.CA | None,
    token: TokenServer | None,
    extra_config: dict[str, Any] | None,
    timeout_s: float,
    binary: str,
) -> LocalRegistry:
    port = free_port()
    host = f"127.0.0.1:{port}"
    config = _config(workdir, port)
    username = password = None
    cert_dir = ca_pem = None
    if htpasswd is not None:
        username, password = htpasswd
        path = workdir / "htpasswd"
        path.write_text(f"{username}:{_hash_password(password)}\n")
        config["auth"] = {"htpasswd": {"realm": "sandbox-realm", "path": str(path)}}
    if token is not None:
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.cert_pem_path),
            }
        }
        username, password = token.default_credentials()
    if tls is not None:
        tls_dir = workdir / "tls"
        tls_dir.mkdir(exist_ok=True)
        cert = tls.issue_cert("127.0.0.1", "localhost")
        cert_path, key_path = tls_dir / "server.crt", tls_dir / "server.key"
        cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key_path))
        ca_pem = tls_dir / "ca.crt"
        tls.cert_pem.write_to_path(str(ca_pem))
        cert_dir = workdir / "certs.d" / host
        if cert_dir.exists():
            shutil.rmtree(cert_dir)
        cert_dir.mkdir(parents=True)
        shutil.copy(ca_pem, cert_dir / "ca.crt")
        config["http"]["tls"] = {"certificate": str(cert_path), "key": str(key_path)}
    for key, value in (extra_config or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=True))
    log_path = workdir / "registry.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(workdir),
        )
    scheme = "https" if tls is not None else "http"
    reg = LocalRegistry(
        host=host,
        url=f"{scheme}://{host}",
        root=workdir / "storage",
        log_path=log_path,
        cert_dir=cert_dir,
        ca_pem=ca_pem,
        username=username,
        password=password,
        process=proc,
    )
    deadline = time.monotonic() + timeout_s
    with httpx.Client(verify=reg.ssl_context(), timeout=1.0) as probe:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if probe.get(reg.url + "/v2/").status_code in (200, 401):
                    return reg
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    reg.stop()
    raise RegistryStartError(
        f"registry on {host} did not come up within {timeout_s} s; log tail:\n{reg.log_tail()}"
    )
