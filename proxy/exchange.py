"""One proxied request: connect, stream the request up, stream the response down.

Flow control runs both ways without buffering whole bodies: when the target's socket buffer
fills, the client connection stops reading (and vice versa), so memory per exchange is
bounded by the transports' high-water marks plus one read. Bodies are re-framed on the way:
a ``Content-Length`` body passes as is, a chunked or close-delimited one goes out chunked to
HTTP/1.1 clients and close-delimited to HTTP/1.0 ones.

Where an exchange stands is one :class:`~proxy.exchange_state.Phase`, moved only along the
transitions listed in :mod:`proxy.exchange_state`. Only one response per request is relayed:
whatever the target sends after a complete answer (a second response, a body after a
``HEAD`` answer) is dropped and the target connection is not reused.

Failure rules: no route → 404; target refused or closed before answering → 503 (a request
without a body that met a stale keep-alive connection is retried once on a fresh one);
unparsable answer → 502; any failure after the response head went out closes the client
connection. ``Expect: 100-continue`` is forwarded and the target's ``100`` relayed.
"""

from __future__ import annotations

import asyncio
import logging

import httptools

from .exchange_state import (
    ENDED,
    HOLDING,
    IGNORING,
    NOT_STARTED,
    READING,
    Phase,
    check_transition,
)
from .headers import (
    LAST_CHUNK,
    ResponseHeaders,
    encode_chunk,
    interim_head,
    request_head,
    response_head,
)
from .logs import access_log
from .messages import PAUSE_BACKPRESSURE, PAUSE_BUFFER, Downstream, ProxyContext, Request
from .routes import Route
from .upstream import UpstreamConnection
from .websocket import Tunnel

__all__ = ["Exchange"]

log = logging.getLogger(__name__)

# body bytes held while the target connection is being opened, before the client is paused
PENDING_LIMIT = 64 * 1024
_ERROR_TARGET_STATUSES = frozenset({404, 502, 503})


class Exchange:
    """One request/response through the proxy.

    Driven by the client connection (:meth:`start`, :meth:`feed_body`, :meth:`body_complete`,
    :meth:`client_lost`, flow control) and by the target connection (the ``upstream_*`` calls
    and httptools' response-parser callbacks). Ends with exactly one
    ``downstream.exchange_done(self, keep_alive)`` — or, after a WebSocket handshake, by
    handing both connections to a :class:`~proxy.websocket.Tunnel`.

    Besides :attr:`phase`, five facts decide how bytes are framed and whether connections are
    reused; each is independent of the phase (and of the others):

    - ``_request_done``: the client sent its whole request;
    - ``_keep_alive`` / ``_up_keep_alive``: the client / target connection may serve another
      request after this one;
    - ``_chunk_out``: the body goes to the client re-chunked;
    - ``_close_delimited``: the target ends the body by closing the connection.

    ``_reused`` says the target connection came from the pool (only such a connection is
    retried, on a fresh one, which therefore cannot be retried again).
    """

    __slots__ = (
        "_chunk_out",
        "_close_delimited",
        "_headers",
        "_keep_alive",
        "_note",
        "_out",
        "_parser",
        "_pending",
        "_pending_size",
        "_phase",
        "_request_done",
        "_reused",
        "_task",
        "_up",
        "_up_keep_alive",
        "ctx",
        "down",
        "reject",
        "request",
        "route",
        "status",
    )

    def __init__(
        self,
        ctx: ProxyContext,
        down: Downstream,
        request: Request,
        route: Route | None,
        reject: int = 0,
    ) -> None:
        self.ctx = ctx
        self.down = down
        self.request = request
        self.route = route
        self.reject = reject  # a status to answer with at once (400, 431)
        self.status = 0
        self._phase = Phase.ROUTING
        self._up: UpstreamConnection | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._headers = ResponseHeaders()
        self._out: list[bytes] = []  # response bytes gathered while parsing one read
        self._note = ""
        self._reused = self._chunk_out = self._close_delimited = self._up_keep_alive = False
        self._request_done = not request.has_body
        self._keep_alive = request.keep_alive

    @property
    def phase(self) -> Phase:
        """Where the exchange stands (see :mod:`proxy.exchange_state`)."""
        return self._phase

    def _enter(self, phase: Phase) -> None:
        # raising (not asserting) so that a wrong move fails even under ``python -O``
        check_transition(self._phase, phase)
        self._phase = phase

    # -- driven by the client connection

    def start(self) -> None:
        """Route the request: answer an error, or get a target connection."""
        if self.reject:
            self._respond_error(self.reject, "malformed request")
            return
        route = self.route
        if route is None:
            self._respond_error(404, "no route")
            return
        route.last_activity = self.ctx.now()
        self._enter(Phase.CONNECTING)
        conn = None
        if not self.request.headers.websocket:
            conn = self.ctx.pool.acquire(route.target)
        if conn is not None:
            self._attach(conn, reused=True)
        else:
            self._task = asyncio.get_running_loop().create_task(self._connect())

    def feed_body(self, chunk: bytes) -> None:
        """A piece of the request body, as decoded by the client's parser."""
        if self._phase not in ENDED:
            self._send_body(encode_chunk(chunk) if self.request.headers.chunked else chunk)

    def body_complete(self) -> None:
        """The client finished sending the request."""
        if self.request.headers.chunked and self._phase not in ENDED:
            self._send_body(LAST_CHUNK)
        self._request_done = True

    def client_lost(self) -> None:
        """The client went away: give up, closing the target connection if it is mid-flight."""
        if self._phase in ENDED:
            return
        self._enter(Phase.DONE)
        self._parser = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._drop_upstream()

    def disable_keep_alive(self) -> None:
        """Close the client connection after this answer (graceful shutdown)."""
        self._keep_alive = False

    def client_paused_writing(self) -> None:
        if self._up is not None:
            self._up.pause_reading()

    def client_resumed_writing(self) -> None:
        if self._up is not None:
            self._up.resume_reading()

    # -- the target connection

    async def _connect(self) -> None:
        assert self.route is not None
        try:
            conn = await self.ctx.pool.connect(self.route.target)
        except (OSError, TimeoutError) as exc:
            self._task = None
            if self._phase not in ENDED:
                self._respond_error(503, f"cannot connect: {exc or type(exc).__name__}")
            return
        self._task = None
        if self._phase in ENDED:
            self.ctx.pool.release(conn)
        else:
            self._attach(conn, reused=False)

    def _attach(self, conn: UpstreamConnection, *, reused: bool) -> None:
        assert self.route is not None
        self._up, self._reused = conn, reused
        conn.handler = self
        self._parser = httptools.HttpResponseParser(self)
        req = self.request
        target, forwarded = self.route.target, self.down.forwarded
        head = request_head(req.method, req.url, req.headers, target=target, forwarded=forwarded)
        if self._pending:
            head = b"".join([head, *self._pending])
            self._pending.clear()
            self._pending_size = 0
            self.down.resume_reading(PAUSE_BUFFER)
        self._enter(Phase.AWAITING)
        conn.write(head)
        if self.down.write_paused:
            conn.pause_reading()

    def _send_body(self, data: bytes) -> None:
        if self._phase not in HOLDING:
            # no target connection while the proxy answers by itself: the body is dropped
            if self._up is not None:
                self._up.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size > PENDING_LIMIT:
            self.down.pause_reading(PAUSE_BUFFER)

    def upstream_data(self, data: bytes) -> None:
        if self._phase not in READING:  # the answer is over: later bytes are never relayed
            self._up_keep_alive = False
            return
        if self._phase is Phase.AWAITING:
            self._enter(Phase.RECEIVING)
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._flush()
            if self._phase is Phase.SWITCHING:
                self._open_tunnel(data[exc.args[0] :])
            else:
                self._upstream_failed("unexpected protocol switch")
            return
        except httptools.HttpParserError as exc:
            self._flush()
            if isinstance(exc, httptools.HttpParserCallbackError):
                log.error("Bug while relaying a response", exc_info=exc.__context__)
            self._upstream_failed(f"invalid response: {exc}")
            return
        if self._phase is Phase.COMPLETE:
            self._finish()  # flushes, final chunk included
            return
        self._flush()
        if self._phase in (Phase.SWITCHING, Phase.BAD_SWITCH):
            self._upstream_failed("invalid 101 response")

    def upstream_lost(self, exc: Exception | None) -> None:
        self._up = None
        phase = self._phase
        if phase in ENDED:
            return
        if phase in NOT_STARTED:
            if self._can_retry():
                self._enter(Phase.CONNECTING)
                self._task = asyncio.get_running_loop().create_task(self._connect())
            else:
                reason = f"target closed the connection{f': {exc}' if exc else ''}"
                self._respond_error(503 if phase is Phase.AWAITING else 502, reason)
        elif phase is Phase.STREAMING and self._close_delimited:
            self._enter(Phase.COMPLETE)
            self._finish()
        else:
            self._abort("target closed the connection mid-response")

    def _can_retry(self) -> bool:
        # silent before answering, on a pooled connection: the target closed it as idle
        return self._phase is Phase.AWAITING and self._reused and not self.request.has_body

    def upstream_paused_writing(self) -> None:
        self.down.pause_reading(PAUSE_BACKPRESSURE)

    def upstream_resumed_writing(self) -> None:
        self.down.resume_reading(PAUSE_BACKPRESSURE)

    def _flush(self) -> None:
        """Write what one read produced with one call: one syscall instead of three."""
        out = self._out
        if out:
            self.down.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _drop_upstream(self) -> None:
        up, self._up = self._up, None
        if up is not None:
            up.close()

    # -- httptools response-parser callbacks

    def on_message_begin(self) -> None:
        if self._phase in IGNORING:
            # a message where none belongs (in the same read as the answer): relaying it
            # would answer the client's next request with it
            self._up_keep_alive = False
            return
        self._headers = ResponseHeaders()
        self._enter(Phase.HEAD)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase is Phase.HEAD:  # trailers (after the body) are dropped
            self._headers.add(name, value)

    def on_headers_complete(self) -> None:
        if self._phase is not Phase.HEAD:
            return  # the head of an ignored message
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status == 101:
            if self.request.headers.websocket and self._parser.should_upgrade():
                self._begin_switch()
            else:
                self._enter(Phase.BAD_SWITCH)  # upstream_data answers 502
        elif status < 200:
            self._enter(Phase.INTERIM)
            if not self.request.http10:
                self._out.append(interim_head(status, self._headers))
        else:
            self._start_response(status, self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if self._phase is Phase.STREAMING:
            self._out.append(encode_chunk(body) if self._chunk_out else body)
        else:
            self._up_keep_alive = False  # a body where none belongs (a HEAD answer's): dropped

    def on_message_complete(self) -> None:
        if self._phase is Phase.INTERIM:
            self._enter(Phase.RECEIVING)  # the final head is still to come
        elif self._phase is Phase.STREAMING:
            self._enter(Phase.COMPLETE)
        # otherwise the end of an ignored message, or of a 101 (upstream_data decides)

    # -- the response

    def _start_response(self, status: int, up_keep_alive: bool) -> None:
        req = self.request
        self.status = status
        self._up_keep_alive = up_keep_alive
        head_only = req.method == b"HEAD"
        if not (head_only or status in (204, 304) or self._headers.content_length):
            self._close_delimited = not self._headers.chunked
            if req.http10:
                self._keep_alive = False
            else:
                self._chunk_out = True
        if req.headers.websocket or not self._request_done:
            self._keep_alive = False  # the client's side of the connection is undefined
        head = response_head(
            status,
            self._headers,
            chunked=self._chunk_out,
            keep_alive=self._keep_alive,
            http10=req.http10,
        )
        self._out.append(head)
        self._enter(Phase.COMPLETE if head_only else Phase.STREAMING)

    def _begin_switch(self) -> None:
        self.status = 101
        head = response_head(
            101, self._headers, chunked=False, keep_alive=True, http10=False, upgrade=True
        )
        self._out.append(head)
        self._enter(Phase.SWITCHING)

    def _open_tunnel(self, tail: bytes) -> None:
        up, self._up = self._up, None
        assert up is not None
        self._enter(Phase.TUNNEL)
        self._parser = None
        self._log("websocket")
        if self.ctx.stats is not None:
            self.ctx.stats.tunnels_opened += 1
        if tail:
            self._out.append(tail)
        self._flush()
        self.down.start_tunnel(Tunnel(self.down, up, self.route, self.ctx.now))

    def _finish(self) -> None:
        if self._phase in ENDED:
            return
        self._enter(Phase.DONE)
        self._parser = None  # it refers back to us: break the cycle, spare the GC
        if self._chunk_out:
            self._out.append(LAST_CHUNK)
        self._flush()
        up, self._up = self._up, None
        if up is not None:
            if self._up_keep_alive and self._request_done:
                self.ctx.pool.release(up)
            else:
                up.close()
        if self.route is not None:
            self.route.last_activity = self.ctx.now()
        self._log()
        self.down.exchange_done(self, self._keep_alive and self._request_done)

    # -- failures

    def _upstream_failed(self, reason: str) -> None:
        if self._phase in NOT_STARTED:
            self._respond_error(502, reason)
        else:
            self._abort(reason)

    def _abort(self, reason: str) -> None:
        """Fail after the response head went out: all the client can get is a closed socket."""
        self._note = reason
        self._keep_alive = self._up_keep_alive = False
        self._chunk_out = False  # no terminating chunk: the client must see the truncation
        if self.ctx.stats is not None:
            self.ctx.stats.upstream_errors += 1
        self._drop_upstream()
        self._finish()

    def _respond_error(self, status: int, reason: str) -> None:
        self.status, self._note = status, reason
        if status in (502, 503) and self.ctx.stats is not None:
            self.ctx.stats.upstream_errors += 1
        self._drop_upstream()
        req = self.request
        if req.headers.websocket or not self._request_done:
            self._keep_alive = False
        self._enter(Phase.ERROR_PAGE)
        head_only = req.method == b"HEAD"
        pages = self.ctx.error_pages
        if pages.target is None or status not in _ERROR_TARGET_STATUSES:
            self.down.write(pages.builtin(status, keep_alive=self._keep_alive, head_only=head_only))
            self._finish()
        else:
            coro = self._send_error_page(status, head_only)
            self._task = asyncio.get_running_loop().create_task(coro)

    async def _send_error_page(self, status: int, head_only: bool) -> None:
        pages = self.ctx.error_pages
        page = await pages.response(
            status, self.request.url, keep_alive=self._keep_alive, head_only=head_only
        )
        self._task = None
        if self._phase is Phase.ERROR_PAGE:  # not if the client left meanwhile
            self.down.write(page)
            self._finish()

    def _log(self, note: str = "") -> None:
        req = self.request
        stats = self.ctx.stats
        if stats is not None:
            stats.requests[self.status // 100] += 1
        own_error = bool(self._note) or self.route is None
        if own_error:
            level = logging.WARNING if self.status >= 500 else logging.INFO
        else:
            level = logging.DEBUG if self.status < 500 else logging.INFO
        ms = (self.ctx.now() - req.started) * 1000
        access_log(log, level, self.status, req.method, req.url, ms, note or self._note)
