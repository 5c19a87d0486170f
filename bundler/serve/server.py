"""Run ``bundler serve``: listen, answer, read changed bundles again, stop on a signal.

:class:`Bundles` holds the namespace being served. Every ``interval_s`` seconds it looks
at the bundles' files (a directory's ``oci-layout`` and ``index.json``; every file of an
archive: device, inode, size, modification time); when one changed, it reads all of them
again in a worker thread and serves the new namespace only once it has been read whole.
A bundle that does not read whole (an archive being written, an ``index.json`` naming a
blob not yet there) is refused, with one message, until it does: the others go on being
served. An export into a directory bundle writes ``index.json`` last, so a re-export is
picked up when it is complete; an archive's files stay open while served, so one
replaced by a new file keeps serving its old bytes until the new one reads whole, and
one written over in place answers 503 for its blobs from the first changed byte on.

:func:`serve` listens (TLS when given a context), logs one line per request, and stops
on SIGINT or SIGTERM: it stops accepting connections, lets the requests under way end
(for up to ``shutdown_timeout_s``), closes the bundles and returns the signal.

Spec: distribution-spec v1.1 (pull side); RFC 9110.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import BundlerError
from ..stores.tar_index import file_identity, tar_files
from ..termsafe import escape
from .app import error, make_app
from .index import Namespace, build_namespace

__all__ = ["Bundles", "ServeConfig", "serve"]

#: How long an old namespace's open archives stay open after a reload (seconds): the
#: downloads under way finish from them.
OLD_NAMESPACE_GRACE_S = 600.0


def _fingerprint(path: Path) -> list[tuple[int, int, int, int]]:
    """What changes when a bundle changes on disk (see the module docstring)."""
    if path.is_dir():
        return [file_identity(path / name) for name in ("oci-layout", "index.json")]
    try:
        files = tar_files(path)[1]
    except BundlerError:  # gone, or volumes with a gap: the name alone
        files = [path]
    return [file_identity(p) for p in files]


class Bundles:
    """The namespace served, read again when a bundle changes on disk.

    Args:
        paths: the bundles (directories, ``.tar`` files, volumes).
        prefix, mapping: the naming (see :func:`build_namespace`).
        say: receives one line per reload or refusal (already escaped).

    Raises:
        BundlerError: at construction, as :func:`build_namespace`.
    """

    def __init__(self, paths: Sequence[str], *, prefix: str | None = None,
                 mapping: list[tuple[str, str]] | None = None,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.paths = [Path(p) for p in paths]
        self.prefix, self.mapping, self.say = prefix, mapping, say
        self._seen = {p: _fingerprint(p) for p in self.paths}
        self.namespace = build_namespace(self.paths, prefix=prefix, mapping=mapping)
        self._last_message = ""
        self._refused: set[Path] = set()

    def changed(self) -> list[Path]:
        """The bundles whose files changed since they were last read."""
        return [p for p in self.paths if _fingerprint(p) != self._seen[p]]

    def reload(self) -> Namespace | None:
        """Read the bundles again (blocking: run it in a worker thread).

        Returns:
            The new namespace to serve, or None when nothing changed.
        """
        changed = self.changed()
        if not changed:
            return None
        for p in changed:
            self._seen[p] = _fingerprint(p)
        refused: list[str] = []
        for p in changed:  # each changed bundle must read whole on its own first
            try:
                build_namespace([p], prefix="check").close()
            except BundlerError as exc:
                refused.append(f"{p} ({exc})")
        bad = {p for p in changed if any(r.startswith(f"{p} (") for r in refused)}
        # a bundle refused earlier stays out until it changes (and then reads whole)
        self._refused = (self._refused - set(changed)) | bad
        kept = [p for p in self.paths if p not in self._refused]
        try:
            namespace = build_namespace(kept, prefix=self.prefix, mapping=self.mapping)
        except BundlerError as exc:  # together they clash (two images, one name)
            refused += [f"{p} ({exc})" for p in changed if p in kept]
            self._refused |= {p for p in changed if p in kept}
            kept = [p for p in kept if p not in changed]
            try:
                namespace = build_namespace(kept, prefix=self.prefix, mapping=self.mapping)
            except BundlerError:
                namespace = Namespace()
        if refused:
            message = ("refused until it reads whole again, its images are not served: "
                       + "; ".join(refused))
        else:
            message = (f"read again: {', '.join(str(p) for p in changed)}: "
                       f"{namespace.describe()}")
        if message != self._last_message:
            self.say(escape(message))
            self._last_message = message
        return namespace


@dataclass
class ServeConfig:
    """How to serve.

    Attributes:
        host, port: where to listen (port 0: any free port).
        ssl_context: TLS, or None for plain HTTP.
        check_auth: the htpasswd check (:class:`bundler.serve.auth.Htpasswd`), or None.
        log: receives each access log line (already escaped), or None for no log.
        interval_s: how often the bundles' files are looked at (seconds).
        shutdown_timeout_s: how long requests under way may take to end on a signal.
    """

    host: str = "127.0.0.1"
    port: int = 5000
    ssl_context: ssl.SSLContext | None = None
    check_auth: Callable[[web.Request], Awaitable[web.Response | None]] | None = None
    log: Callable[[str], None] | None = None
    interval_s: float = 1.0
    shutdown_timeout_s: float = 10.0


def _access_log(log: Callable[[str], None]) -> Any:
    """A middleware writing one line per request: client, request line, status, bytes,
    milliseconds. No header is logged (so no credential), nor the value of a query
    parameter the API does not define; the target is escaped."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        status, size = 500, 0
        try:
            response = await handler(request)
            status = response.status
            size = response.content_length or getattr(response, "body_length", 0) or 0
            return response  # type: ignore[no-any-return]
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            millis = (time.perf_counter() - started) * 1000
            version = f"HTTP/{request.version.major}.{request.version.minor}"
            log(f'{escape(request.remote or "-")} "{escape(request.method)} '
                f'{escape(_logged_target(request))} {version}" {status} {size} '
                f"{millis:.1f}ms")

    return middleware


#: Query parameters of the pull API, logged with their values; any other parameter is
#: logged as ``NAME=-`` (a client may put a token in the query string).
_LOGGED_PARAMETERS = frozenset({"n", "last", "artifactType"})


def _logged_target(request: web.Request) -> str:
    """The request target as logged: the raw path, and the query with the values of
    parameters outside :data:`_LOGGED_PARAMETERS` left out."""
    path, _, query = request.rel_url.raw_path_qs.partition("?")
    if not query:
        return path
    kept = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        kept.append(pair if name in _LOGGED_PARAMETERS else f"{name}{sep}{'-' if sep else ''}")
    return f"{path}?{'&'.join(kept)}"


@web.middleware
async def _no_tracebacks(request: web.Request, handler: Any) -> web.StreamResponse:
    """An unexpected error becomes a 500 with the spec's error body, not a traceback."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except (web.HTTPException, asyncio.CancelledError, ConnectionError):
        raise
    except Exception as exc:
        return error(500, "UNKNOWN", f"internal error: {type(exc).__name__}: {exc}")


async def _watch(bundles: Bundles, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        if not await loop.run_in_executor(None, bundles.changed):
            continue
        new = await loop.run_in_executor(None, bundles.reload)
        if new is not None:
            old, bundles.namespace = bundles.namespace, new
            loop.call_later(OLD_NAMESPACE_GRACE_S, old.close)


async def serve(bundles: Bundles, config: ServeConfig,
                on_ready: Callable[[list[str]], None] = lambda urls: None) -> int:
    """Serve until SIGINT or SIGTERM.

    Args:
        bundles: what to serve.
        config: where and how (:class:`ServeConfig`).
        on_ready: called with the base URLs once listening.

    Returns:
        The signal that stopped the server.

    Raises:
        BundlerError: the address cannot be listened on (in use, not this machine's).
    """
    for name in ("aiohttp.server", "aiohttp.access", "aiohttp.web", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    middlewares = [_access_log(config.log)] if config.log else []
    middlewares.append(_no_tracebacks)
    app = make_app(lambda: bundles.namespace, check_auth=config.check_auth,
                   middlewares=middlewares)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=config.shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=config.ssl_context,
                       backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise BundlerError(f"cannot listen on {config.host}:{config.port}: {reason}") from None
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda s=signum: stopped.done() or stopped.set_result(s))
    scheme = "https" if config.ssl_context else "http"
    urls = []
    for address in runner.addresses:
        host, port = address[0], address[1]
        urls.append(f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}")
    on_ready(urls)
    watcher = asyncio.create_task(_watch(bundles, config.interval_s))
    try:
        signum = await stopped
    finally:
        watcher.cancel()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)
        await runner.cleanup()
        bundles.namespace.close()
    return int(signum)
