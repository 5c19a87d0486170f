"""A TCP proxy on loopback that adds a fixed one-way delay: a slow link for benchmarks.

:class:`LatencyProxy` listens on a free 127.0.0.1 port and relays every connection to
one upstream ``host:port`` (a registry), holding each piece of data for ``delay_s``
seconds in each direction, so a request and its answer take one round trip
(``2 * delay_s``) more than on loopback. A new connection costs one round trip more
before its first bytes reach the upstream, as the TCP handshake would. Bytes in flight
per direction of a connection are capped at ``window`` (the link's bandwidth-delay
product: at most ``window / delay_s`` bytes per second per connection), as a TCP
window caps a real long link. It speaks no HTTP: bytes pass unchanged, TLS included.

The proxy runs an asyncio event loop in a daemon thread; ``start()`` returns once it
listens and ``stop()`` closes the listener and every relayed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import Self

__all__ = ["LatencyProxy"]

READ_BYTES = 256 * 1024
DEFAULT_WINDOW = 8 * 1024 * 1024


async def _relay(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay_s: float,
                 window: int, not_before: float) -> None:
    """Copy ``src`` to ``dst``, each read delivered ``delay_s`` seconds after it arrived
    (and not before ``not_before``, loop time); at most ``window`` bytes held at once.
    The end of ``src`` is passed on (half-close) after the same delay."""
    loop = asyncio.get_running_loop()
    held: deque[tuple[float, bytes]] = deque()
    state = {"bytes": 0}
    changed = asyncio.Condition()

    async def receive() -> None:
        while True:
            try:
                data = await src.read(READ_BYTES)
            except (ConnectionError, OSError):
                data = b""
            async with changed:
                await changed.wait_for(lambda: state["bytes"] < window)
                held.append((max(loop.time(), not_before) + delay_s, data))
                state["bytes"] += len(data)
                changed.notify_all()
            if not data:
                return

    async def deliver() -> None:
        while True:
            async with changed:
                await changed.wait_for(lambda: bool(held))
                due, data = held.popleft()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if dst.can_write_eof():
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                return
            dst.write(data)
            await dst.drain()
            async with changed:
                state["bytes"] -= len(data)
                changed.notify_all()

    receiving = asyncio.ensure_future(receive())
    try:
        await deliver()
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiving


class LatencyProxy:
    """A delaying TCP relay from ``127.0.0.1:<port>`` to ``upstream`` (``host:port``).

    Args:
        upstream: ``host:port`` every connection is relayed to.
        delay_s: one-way delay added in each direction (seconds; 0.025 for 25 ms).
        window: bytes held at most per direction of a connection (default 8 MiB).

    Use as a context manager, or ``start()`` / ``stop()``; :attr:`host` is the
    ``127.0.0.1:port`` to give clients in place of ``upstream``.
    """

    def __init__(self, upstream: str, delay_s: float, *, window: int = DEFAULT_WINDOW) -> None:
        host, _, port = upstream.rpartition(":")
        if not host or not port.isdigit() or delay_s < 0 or window < 1:
            raise ValueError(f"LatencyProxy: bad upstream {upstream!r}, delay or window")
        self.upstream_host, self.upstream_port = host, int(port)
        self.delay_s, self.window = delay_s, window
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._thread: threading.Thread | None = None
        self._port = 0

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        # the handshake's round trip before the first byte can reach the upstream
        not_before = asyncio.get_running_loop().time() + 2 * self.delay_s
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(
                self.upstream_host, self.upstream_port)
            await asyncio.gather(
                _relay(client_r, upstream_w, self.delay_s, self.window, not_before),
                _relay(upstream_r, client_w, self.delay_s, self.window, 0.0))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # a cut connection, or stop(): both ends are closed below
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.close()
            self._tasks.discard(task)

    def start(self) -> Self:
        """Listen on a free loopback port (in a daemon thread) and return self."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0))
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # handed to start()
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="latency-proxy", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the listener and every relayed connection; idempotent."""
        loop, self._loop = self._loop, None
        if loop is None or self._thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    @property
    def port(self) -> int:
        """The loopback port it listens on (it must be started)."""
        assert self._port, "LatencyProxy not started"
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the address to use in place of the upstream's."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        return self.start() if self._loop is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
