"""An HTTP server of the sandbox on a free 127.0.0.1 port, served by a daemon thread
(the fault proxy and the token server are two)."""

from __future__ import annotations

import sys
import threading
from abc import ABC, abstractmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["LoopbackServer"]


class _Server(ThreadingHTTPServer):
    """A client that hangs up mid-exchange (a cut, a killed process) is normal here."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LoopbackServer(ABC):
    """Lifecycle of one loopback HTTP server: ``start()`` (in the subclass, which makes
    its handler class), ``stop()``, a context manager, and ``port``."""

    _server: ThreadingHTTPServer | None = None

    @abstractmethod
    def start(self) -> Self:
        """Serve (with :meth:`_serve`) and return self."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        """Bind a free 127.0.0.1 port and serve ``handler`` in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving; idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (it must be started)."""
        assert self._server is not None, f"{type(self).__name__} not started"
        return self._server.server_address[1]
