"""One :class:`RegistryClient` per registry host, shared by the threads of a run.

A run talks to several registries (an export's sources, an import's destinations, a
mirror's both sides); each side keeps one pool, so every host gets one client (one
``httpx.Client``, one token cache) built with that side's transport options.
"""

from __future__ import annotations

import dataclasses
import threading

from .client import RegistryClient, TransportOptions

__all__ = ["ClientPool"]


class ClientPool:
    """One :class:`RegistryClient` per registry host, created on first use (thread-safe).

    Args:
        options: the transport options of this side (credentials, TLS, retries); a
            registry named in ``options.registries`` gets the options given there.
    """

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def get(self, registry: str) -> RegistryClient:
        """The client of ``registry`` (``host[:port]``), created on first use."""
        with self._lock:
            client = self._clients.get(registry)
            if client is None:
                options = self.options.registries.get(registry)
                if options is None:
                    options = self.options
                elif self.options.reporter is not None and options.reporter is None:
                    options = dataclasses.replace(options, reporter=self.options.reporter)
                client = self._clients[registry] = RegistryClient(registry, options)
            return client

    def close(self) -> None:
        """Close every client (their connections); the pool can be used again."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
