"""A counting, fault-injecting HTTP/1.1 reverse proxy on loopback, for registry tests.

Bodies stream both ways in chunks (never a whole blob in memory). The client's Host
header is forwarded so the registry builds ``Location`` URLs that point at the proxy;
``X-Forwarded-Proto`` tells it the proxy's scheme. Every request is recorded in
:attr:`FaultProxy.requests` as (method, path_with_query, status, response_body_bytes).

Fault rules match a method (None = any) and a path regex (``re.search`` on the path with
query) and fire ``times`` times (None = forever), after letting the first ``skip``
matches through (``add_rule(..., skip=N)``); the first matching live rule wins for
response faults; ``ignore_range`` and ``relative_location`` combine with them:

* ``corrupt_body(rx)``: forward, but flip one byte (the first) of the response body;
  the length stays the same.
* ``drop_after(rx, nbytes)``: forward, send the headers and ``nbytes`` of body, then
  close the connection (the client sees a short read).
* ``status(rx, code, headers, body)``: answer directly without forwarding (e.g. 429 with
  ``Retry-After: 1``, 503, 500).
* ``slow(rx, bytes_per_second)``: forward, throttling the response body.
* ``relative_location(rx)``: rewrite an absolute ``Location`` response header to its
  path + query (registries may answer either way).
* ``ignore_range(rx)``: drop the ``Range`` request header so the upstream answers 200
  with the whole body (a server without range support).
* ``set_request_header(rx, name, value)``: forward with that request header set (after
  :attr:`FaultProxy.headers` recorded what the client sent), e.g. a storage host that
  authorizes an upload by its URL alone.
* ``rewrite_location(rx, host)``: point an absolute ``Location`` response header at
  ``host`` (``127.0.0.1:PORT``, e.g. another proxy) instead.
* ``forward_then_status(rx, code)``: forward the request (the upstream acts on it), then
  answer ``code`` instead of the upstream's answer (a lost success).
* ``drop_response_header(rx, name)``: forward, leaving ``name`` out of the answer.
* ``stall(rx, nbytes, seconds)``: forward, send the headers and ``nbytes`` of body, then
  send nothing for ``seconds`` (at most until the proxy stops) and close.

:attr:`FaultProxy.headers` holds (method, path_with_query, request headers as received)
of every request.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from .loopback import LoopbackServer

__all__ = ["FaultProxy", "FaultRule"]

_CHUNK = 64 * 1024
_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


@dataclass
class FaultRule:
    """One fault: ``kind`` applies to requests matching ``method`` and ``path``."""

    kind: str
    path: re.Pattern[str]
    method: str | None
    times: int | None
    params: dict[str, Any]

    def matches(self, method: str, path: str) -> bool:
        """Return whether this live rule applies to (method, path)."""
        if self.times is not None and self.times <= 0:
            return False
        return (self.method is None or self.method == method) and bool(self.path.search(path))


class FaultProxy(LoopbackServer):
    """Reverse proxy from ``http://127.0.0.1:PORT`` to ``upstream_url``.

    Args:
        upstream_url: e.g. ``LocalRegistry.url``.
        upstream_ssl: SSL context for an https upstream (default: no verification).

    Attributes:
        requests: (method, path_with_query, status, response body bytes sent).
        rules: the fault rules, oldest first.
    """

    def __init__(self, upstream_url: str, *, upstream_ssl: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(upstream_url)
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream_https = parts.scheme == "https"
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or (443 if self.upstream_https else 80)
        if upstream_ssl is None and self.upstream_https:
            upstream_ssl = ssl.create_default_context()
            upstream_ssl.check_hostname = False
            upstream_ssl.verify_mode = ssl.CERT_NONE
        self.upstream_ssl = upstream_ssl
        self.requests: list[tuple[str, str, int, int]] = []
        self.headers: list[tuple[str, str, dict[str, str]]] = []
        self.rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Listen on a free 127.0.0.1 port in a daemon thread; returns self."""
        owner = self

        class Handler(_ProxyHandler):
            proxy = owner

        self._serve(Handler)
        return self

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` of the proxy."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return "http://" + self.host

    # -- rules -------------------------------------------------------------------
    def add_rule(
        self,
        kind: str,
        path_regex: str,
        *,
        method: str | None = None,
        times: int | None = 1,
        **params: Any,
    ) -> FaultRule:
        """Add a rule of ``kind`` (see module docstring) and return it."""
        rule = FaultRule(kind, re.compile(path_regex), method, times, params)
        with self._lock:
            self.rules.append(rule)
        return rule

    def corrupt_body(
        self, path_regex: str, *, method: str | None = "GET", times: int | None = 1
    ) -> FaultRule:
        """Flip the first byte of matching response bodies (same length)."""
        return self.add_rule("corrupt", path_regex, method=method, times=times)

    def drop_after(
        self, path_regex: str, nbytes: int, *, method: str | None = "GET", times: int | None = 1
    ) -> FaultRule:
        """Send headers and ``nbytes`` of the body, then close the connection."""
        return self.add_rule("drop", path_regex, method=method, times=times, nbytes=nbytes)

    def status(
        self,
        path_regex: str,
        code: int,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        *,
        method: str | None = None,
        times: int | None = 1,
    ) -> FaultRule:
        """Answer ``code`` with ``headers`` and ``body`` directly, without forwarding."""
        return self.add_rule(
            "status",
            path_regex,
            method=method,
            times=times,
            code=code,
            headers=dict(headers or {}),
            body=body,
        )

    def slow(
        self,
        path_regex: str,
        bytes_per_second: int,
        *,
        method: str | None = None,
        times: int | None = None,
    ) -> FaultRule:
        """Throttle matching response bodies to ``bytes_per_second``."""
        return self.add_rule("slow", path_regex, method=method, times=times, rate=bytes_per_second)

    def relative_location(
        self, path_regex: str = ".", *, method: str | None = None, times: int | None = None
    ) -> FaultRule:
        """Rewrite absolute ``Location`` response headers to path + query."""
        return self.add_rule("relative", path_regex, method=method, times=times)

    def ignore_range(
        self, path_regex: str = ".", *, method: str | None = None, times: int | None = None
    ) -> FaultRule:
        """Strip ``Range`` from matching requests so the upstream sends the whole body."""
        return self.add_rule("norange", path_regex, method=method, times=times)

    def set_request_header(
        self, path_regex: str, name: str, value: str, *, method: str | None = None,
        times: int | None = None
    ) -> FaultRule:
        """Forward matching requests with request header ``name`` set to ``value``."""
        return self.add_rule("setheader", path_regex, method=method, times=times, name=name,
                             value=value)

    def rewrite_location(
        self, path_regex: str, host: str, *, method: str | None = None, times: int | None = None
    ) -> FaultRule:
        """Point absolute ``Location`` response headers at ``host`` (``HOST:PORT``)."""
        return self.add_rule("location", path_regex, method=method, times=times, host=host)

    def forward_then_status(
        self, path_regex: str, code: int, *, method: str | None = None, times: int | None = 1
    ) -> FaultRule:
        """Forward matching requests, then answer ``code`` (empty body) instead."""
        return self.add_rule("after", path_regex, method=method, times=times, code=code)

    def drop_response_header(
        self, path_regex: str, name: str, *, method: str | None = None, times: int | None = None
    ) -> FaultRule:
        """Leave response header ``name`` out of matching answers."""
        return self.add_rule("dropheader", path_regex, method=method, times=times,
                             name=name.lower())

    def stall(
        self, path_regex: str, nbytes: int, seconds: float, *, method: str | None = "GET",
        times: int | None = 1
    ) -> FaultRule:
        """Send headers and ``nbytes`` of the body, then nothing for ``seconds``."""
        return self.add_rule("stall", path_regex, method=method, times=times, nbytes=nbytes,
                             seconds=seconds)

    def stop(self) -> None:
        """Stop serving (a stalled answer ends at once); idempotent."""
        self._stopping.set()
        super().stop()

    def clear_rules(self) -> None:
        """Remove every rule."""
        with self._lock:
            self.rules.clear()

    def take(self, method: str, path: str, kinds: set[str]) -> FaultRule | None:
        """Return the first live rule of one of ``kinds`` matching, consuming one use."""
        with self._lock:
            for rule in self.rules:
                if rule.kind in kinds and rule.matches(method, path):
                    if rule.params.get("skip", 0) > 0:  # let the first N matches through
                        rule.params["skip"] -= 1
                        continue
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    def count(self, method: str | None = None, path_regex: str = ".") -> int:
        """Number of recorded requests matching ``method`` and ``path_regex``."""
        rx = re.compile(path_regex)
        with self._lock:
            return sum(
                1
                for m, p, _, _ in self.requests
                if (method is None or m == method) and rx.search(p)
            )

    def record(self, method: str, path: str, status: int, nbytes: int) -> None:
        """Append one entry to :attr:`requests` (thread-safe)."""
        with self._lock:
            self.requests.append((method, path, status, nbytes))


class _ProxyHandler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _request_body(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":

            def chunks() -> Any:
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return
                    yield self.rfile.read(size)
                    self.rfile.readline()

            return chunks()
        length = int(self.headers.get("Content-Length", "0") or 0)
        if length == 0:
            return None

        def fixed() -> Any:
            left = length
            while left:
                data = self.rfile.read(min(_CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data

        return fixed()

    def _handle(self) -> None:
        proxy, method, path = self.proxy, self.command, self.path
        with proxy._lock:
            proxy.headers.append((method, path, dict(self.headers.items())))
        direct = proxy.take(method, path, {"status"})
        body = self._request_body()
        if direct is not None:
            for _ in body or ():
                pass
            payload = direct.params["body"]
            self.send_response(direct.params["code"])
            for key, value in direct.params["headers"].items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            proxy.record(method, path, direct.params["code"], len(payload))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if proxy.take(method, path, {"norange"}) is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        headers["X-Forwarded-Proto"] = "http"
        setter = proxy.take(method, path, {"setheader"})
        if setter is not None:
            headers = {k: v for k, v in headers.items()
                       if k.lower() != setter.params["name"].lower()}
            headers[setter.params["name"]] = setter.params["value"]
        if self.proxy.upstream_https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                proxy.upstream_host, proxy.upstream_port, context=proxy.upstream_ssl, timeout=60
            )
        else:
            conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            chunked = body is not None and "Content-Length" not in headers
            conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
            upstream = conn.getresponse()
            self._relay(upstream, method, path)
        except (OSError, http.client.HTTPException) as exc:
            if not getattr(self, "_headers_sent", False):
                msg = f"proxy upstream error: {exc}".encode()
                proxy.record(method, path, 502, len(msg))
                self.send_response(502)
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
            self.close_connection = True
        finally:
            conn.close()

    def _relay(self, upstream: http.client.HTTPResponse, method: str, path: str) -> None:
        proxy = self.proxy
        after = proxy.take(method, path, {"after"})
        if after is not None:  # the upstream acted on it; its answer is lost
            upstream.read()
            proxy.record(method, path, after.params["code"], 0)
            self.send_response(after.params["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        fault = proxy.take(method, path, {"corrupt", "drop", "slow", "stall"})
        relative = proxy.take(method, path, {"relative"}) is not None
        moved = proxy.take(method, path, {"location"})
        dropped = proxy.take(method, path, {"dropheader"})
        self.send_response(upstream.status, upstream.reason)
        length = upstream.getheader("Content-Length")
        for key, value in upstream.getheaders():
            if key.lower() in _HOP:
                continue
            if dropped is not None and key.lower() == dropped.params["name"]:
                continue
            if key.lower() == "location" and moved is not None and "://" in value:
                parts = urlsplit(value)
                value = parts._replace(netloc=moved.params["host"]).geturl()
            if key.lower() == "location" and relative and "://" in value:
                parts = urlsplit(value)
                value = parts.path + ("?" + parts.query if parts.query else "")
            self.send_header(key, value)
        no_body = method == "HEAD" or upstream.status in (204, 304)
        use_chunked = length is None and not no_body
        if use_chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if no_body:
            upstream.read()
            proxy.record(method, path, upstream.status, 0)  # before the client sees it
            self.end_headers()
            return
        slow = fault.params["rate"] if fault is not None and fault.kind == "slow" else 0
        size = max(1, min(_CHUNK, slow // 10)) if slow else _CHUNK
        sent, data = 0, upstream.read(size)
        if not data:
            proxy.record(method, path, upstream.status, 0)  # before the client sees it
            self.end_headers()
            if use_chunked:
                self.wfile.write(b"0\r\n\r\n")
            return
        self.end_headers()
        self._headers_sent = True
        if data and fault is not None and fault.kind == "corrupt":
            data = bytes([data[0] ^ 0x01]) + data[1:]
        while data:
            following = upstream.read(size)  # look ahead: record before the last write
            if fault is not None and fault.kind in ("drop", "stall"):
                room = fault.params["nbytes"] - sent
                if len(data) >= room:
                    proxy.record(method, path, upstream.status, sent + room)
                    self._write(data[:room], use_chunked)
                    if fault.kind == "stall":
                        self.wfile.flush()
                        proxy._stopping.wait(fault.params["seconds"])
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
            if slow:
                time.sleep(len(data) / slow)
            sent += len(data)
            if not following:
                proxy.record(method, path, upstream.status, sent)
            self._write(data, use_chunked)
            data = following
        if use_chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, data: bytes, chunked: bool) -> None:
        if not data:
            return
        if chunked:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            self.wfile.write(data)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
