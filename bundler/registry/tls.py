"""TLS trust for registries: the system store plus a certs.d directory per registry.

The system trust store (honouring ``SSL_CERT_FILE``/``SSL_CERT_DIR``), plus the ``*.crt``
CAs and ``*.cert``/``*.key`` client pairs of a certificate directory: the one given with
``--src-cert-dir``/``--dest-cert-dir``, else the first ``ROOT/HOST:PORT`` of
:data:`CERTS_D_ROOTS` that exists.

Spec: containers-certs.d(5).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

from ..errors import BundlerError

__all__ = ["CERTS_D_ROOTS", "find_cert_dir", "ssl_context"]

log = logging.getLogger("bundler.tls")

#: Roots searched for ``HOST:PORT/`` certificate directories (``~`` is expanded on use).
CERTS_D_ROOTS: tuple[str, ...] = (
    "~/.config/containers/certs.d",
    "/etc/containers/certs.d",
    "/etc/docker/certs.d",
)


_SYSTEM_CONTEXTS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_SYSTEM_LOCK = threading.Lock()


def _system_context() -> ssl.SSLContext:
    """The context that trusts the system store alone, made once per process for each
    value of ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (loading the store costs 30-40 ms of CPU
    per registry otherwise) and shared by the registries without a certs.d directory."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _SYSTEM_LOCK:
        context = _SYSTEM_CONTEXTS.get(key)
        if context is None:
            context = _SYSTEM_CONTEXTS[key] = ssl.create_default_context()
        return context


def find_cert_dir(registry: str) -> Path | None:
    """The first ``ROOT/HOST:PORT`` directory of :data:`CERTS_D_ROOTS` that exists.

    Spec: containers-certs.d(5).
    """
    for root in CERTS_D_ROOTS:
        candidate = Path(os.path.expanduser(root)) / registry
        if candidate.is_dir():
            return candidate
    return None


def ssl_context(registry: str, *, verify: bool = True, cert_dir: Path | None = None
                ) -> ssl.SSLContext | bool:
    """The TLS settings for one registry.

    Args:
        registry: ``host[:port]``, the name of its certs.d directory.
        verify: False turns verification off (and returns False).
        cert_dir: a directory of ``*.crt``/``*.cert``/``*.key``; None looks one up.

    Returns:
        An SSL context trusting the system store and the directory's CAs, presenting its
        client certificate; or False when not verifying.

    Raises:
        BundlerError: a client certificate without its key or the reverse, or an
        unreadable file.

    Spec: containers-certs.d(5).
    """
    if not verify:
        return False
    directory = Path(cert_dir) if cert_dir is not None else find_cert_dir(registry)
    if directory is None:
        return _system_context()
    ctx = ssl.create_default_context()
    if directory != cert_dir:
        log.debug("TLS settings for %s from %s", registry, directory)
    try:
        for ca in sorted(directory.glob("*.crt")):
            ctx.load_verify_locations(cafile=str(ca))
        for cert in sorted(directory.glob("*.cert")):
            key = cert.with_suffix(".key")
            if not key.exists():
                raise BundlerError(f"client certificate {cert} has no key {key.name}")
            ctx.load_cert_chain(str(cert), str(key))
        for key in sorted(directory.glob("*.key")):
            if not key.with_suffix(".cert").exists():
                raise BundlerError(f"client key {key} has no certificate {key.stem}.cert")
    except (OSError, ssl.SSLError) as exc:
        raise BundlerError(f"cannot load TLS files from {directory}: {exc}") from exc
    return ctx
