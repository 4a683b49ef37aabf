"""The public side: one :class:`ClientConnection` per client socket.

It parses requests with httptools, refuses malformed ones (``400``, ``431`` for oversized
heads), routes the rest through :mod:`proxy.paths` and the route store, and runs one
:class:`~proxy.exchange.Exchange` at a time; pipelined requests queue behind it, the socket
paused meanwhile. After a WebSocket handshake the connection becomes one end of a
:class:`~proxy.websocket.Tunnel`.

Timeouts: a connection with no request in flight — idle between requests, or still sending a
request head — is closed ``keep_alive_timeout`` seconds after it last finished a response (or
after it connected), which also bounds slow-header attacks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httptools

from .exchange import Exchange
from .headers import Forwarded, RequestHeaders
from .messages import (
    PAUSE_BACKPRESSURE,
    PAUSE_BUFFER,
    PAUSE_PIPELINE,
    PAUSE_UPGRADE,
    ClientHandler,
    ProxyContext,
    Request,
)
from .paths import BadPath, canonical_host, canonical_path
from .routes import Route

__all__ = ["ClientConnection"]


class ClientConnection(asyncio.Protocol):
    """One client socket on the public port (see the module docstring).

    ``connections`` is the server's registry of open connections, used for graceful
    shutdown (:meth:`drain`).
    """

    def __init__(
        self, ctx: ProxyContext, connections: set[ClientConnection], *, tls: bool = False
    ) -> None:
        self.ctx = ctx
        self._connections = connections
        proto, port = (b"https", b"443") if tls else (b"http", b"80")
        self.forwarded = Forwarded(b"", port, proto)
        self._tls = tls
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.draining = False
        self._parser = httptools.HttpRequestParser(self)
        self._paused = 0
        self._closed = self._closing = self._dispatching = False
        self._current: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._parsing: Exchange | None = None
        self._tunnel: ClientHandler | None = None
        self._upgrade_tail: bytes | None = None
        self._url = b""
        self._headers = RequestHeaders()
        self._in_head = True
        self._head_bytes = self._head_size = 0
        self._idle_deadline = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.forwarded.client_ip = str(peer[0]).encode("ascii", "replace")
        self._connections.add(self)
        self._set_idle_deadline()

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.client_data(data)
            return
        if self._upgrade_tail is not None:
            self._upgrade_tail += data
            return
        if self._closing or self._closed:
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_tail = data[exc.args[0] :]
            self.pause_reading(PAUSE_UPGRADE)
            return
        except httptools.HttpParserError:
            self._on_parse_error(400)
            return
        if self._in_head and self._head_bytes > self.ctx.max_header_bytes:
            self._on_parse_error(431)

    def eof_received(self) -> bool | None:
        if self._tls or self._tunnel or self._current is None or self._parsing is not None:
            return None  # close the transport
        self._closing = True  # a complete request is in flight: answer it, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._tunnel is not None:
            self._tunnel.client_lost()
            self._tunnel = None
        if self._current is not None:
            self._current.client_lost()
        for exchange in self._queue:
            exchange.client_lost()
        self._queue.clear()
        self._current = self._parsing = None

    def pause_writing(self) -> None:
        self.write_paused = True
        handler = self._tunnel or self._current
        if handler is not None:
            handler.client_paused_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        handler = self._tunnel or self._current
        if handler is not None:
            handler.client_resumed_writing()

    # -- httptools request-parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = RequestHeaders()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # trailers of a chunked body are dropped
        self._headers.add(name, value)
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._closing or self._closed:
            return
        exchange = self._new_exchange()
        self._parsing = exchange
        self._queue.append(exchange)
        self._dispatch()
        if self._queue:
            self.pause_reading(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        exchange, self._parsing = self._parsing, None
        if exchange is not None:
            exchange.body_complete()

    # -- requests

    def _new_exchange(self) -> Exchange:
        parser = self._parser
        headers = self._headers
        request = Request(
            parser.get_method(),
            self._url,
            "",
            headers,
            parser.get_http_version() == "1.0",
            parser.should_keep_alive(),
            self.ctx.now(),
        )
        reject = 0
        route = None
        upgrade = parser.should_upgrade()
        headers.websocket = headers.websocket and upgrade  # "Upgrade" alone is just a header
        if self._head_size > self.ctx.max_header_bytes or headers.count > self.ctx.max_headers:
            reject = 431
        elif upgrade and not (headers.websocket and request.method == b"GET"):
            reject = 400  # CONNECT, h2c and other upgrades are not proxied
        elif headers.other_coding:
            reject = 501  # gzip etc. as transfer-coding: nobody sends it, nobody gets it
        else:
            reject, route = self._route(request)
        if reject:
            request.keep_alive = False
        return Exchange(self.ctx, self, request, route, reject)

    def _route(self, request: Request) -> tuple[int, Route | None]:
        headers = request.headers
        if headers.host_count > 1 or (headers.host_count == 0 and not request.http10):
            return 400, None
        try:
            path = canonical_path(request.url.split(b"?", 1)[0].decode("latin-1"))
            if self.ctx.host_routing:
                host = (headers.host or b"").decode("latin-1")
                path = "/" + canonical_host(host) + path
        except BadPath:
            return 400, None
        request.path = path
        return 0, self.ctx.store.match(path)

    def _dispatch(self) -> None:
        if self._dispatching:
            return  # an exchange finished synchronously inside start(); the loop continues
        self._dispatching = True
        try:
            while self._current is None and self._queue and not self._closed:
                self._current = self._queue.popleft()
                self._current.start()
        finally:
            self._dispatching = False

    def _on_parse_error(self, status: int) -> None:
        if self._current is None:
            self.write(self.ctx.error_pages.builtin(status))
            self.close()
        elif self._parsing is not None:
            self.close()  # the request in flight is broken mid-body
        else:
            self._closing = True  # finish the response in flight, then close
            self._queue.clear()
            self.pause_reading(PAUSE_PIPELINE)

    # -- Downstream interface (used by exchanges and tunnels)

    def write(self, data: bytes) -> None:
        if not self._closed and self.transport is not None:
            self.transport.write(data)

    def pause_reading(self, reason: int) -> None:
        if not self._paused and not self._closed and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and not self._closed and self.transport is not None:
            self.transport.resume_reading()

    def exchange_done(self, exchange: object, keep_alive: bool) -> None:
        if exchange is not self._current:
            return
        self._current = None
        self.resume_reading(PAUSE_BACKPRESSURE | PAUSE_BUFFER)
        # a handshake is parsed last and refused here: the bytes after it are not HTTP
        refused_upgrade = self._upgrade_tail is not None and not self._queue
        if not keep_alive or self._closing or self.draining or refused_upgrade:
            self.close()
            return
        self._set_idle_deadline()
        self._dispatch()
        if not self._queue:
            self.resume_reading(PAUSE_PIPELINE)

    def start_tunnel(self, tunnel: ClientHandler) -> None:
        self._current = None
        self._tunnel = tunnel
        tail, self._upgrade_tail = self._upgrade_tail, None
        if tail:
            tunnel.client_data(tail)
        if self.draining:
            self.close()
        else:
            self.resume_reading(PAUSE_UPGRADE | PAUSE_BACKPRESSURE | PAUSE_BUFFER)

    def close(self) -> None:
        """Flush what was written and close; ``connection_lost`` does the clean-up."""
        if not self._closed:
            self._closed = True
            if self.transport is not None:
                self.transport.close()

    # -- idle timeout and shutdown

    def _set_idle_deadline(self) -> None:
        self._idle_deadline = self.ctx.now() + self.ctx.keep_alive_timeout
        if self._idle_timer is None:
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_at(self._idle_deadline, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self._closed or self._tunnel is not None or self._current is not None:
            return  # busy; exchange_done sets a new deadline
        loop = asyncio.get_running_loop()
        if loop.time() < self._idle_deadline:
            self._idle_timer = loop.call_at(self._idle_deadline, self._on_idle)
        else:
            self.close()

    @property
    def tunnelling(self) -> bool:
        """True once this connection carries a WebSocket tunnel."""
        return self._tunnel is not None

    @property
    def busy(self) -> bool:
        """True while a request is in flight (not counting tunnels)."""
        return self._current is not None

    def drain(self) -> None:
        """Graceful shutdown: close now if idle or tunnelling, else after the current answer."""
        self.draining = True
        if self._current is None:
            self.close()
        else:
            self._current.disable_keep_alive()
            self.pause_reading(PAUSE_PIPELINE)
