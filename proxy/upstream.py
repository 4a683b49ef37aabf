"""Connections to targets and the keep-alive pool that reuses them.

A :class:`UpstreamConnection` is an asyncio protocol that forwards everything it hears to its
current ``handler`` (an exchange, or a WebSocket tunnel); between requests it rests in the
:class:`UpstreamPool`. Idle connections are reused most-recently-used first and closed after
``idle_timeout`` seconds — shorter than the 5 s keep-alive of Node.js servers, so that the
target rarely closes a connection just as the proxy sends on it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from .messages import UpstreamHandler
from .routes import Target

__all__ = ["UpstreamConnection", "UpstreamPool"]

log = logging.getLogger(__name__)

PoolKey = tuple[str, str, int]


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to a target.

    ``handler`` receives data, loss and flow-control events; ``None`` while idle in the pool,
    where any data or EOF from the target simply closes the connection.
    """

    def __init__(self, pool: UpstreamPool, key: PoolKey) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.handler: UpstreamHandler | None = None
        self.closed = False
        self.write_paused = False
        self.reading_paused = False
        self.idle_since = 0.0

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        if handler is None:
            self.close()  # a target must not speak while idle
        else:
            handler.upstream_data(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.upstream_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.handler is not None:
            self.handler.upstream_paused_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.handler is not None:
            self.handler.upstream_resumed_writing()

    # -- used by exchanges and tunnels

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Detach the handler (it gets no ``upstream_lost``) and close the connection."""
        self.handler = None
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    @property
    def usable(self) -> bool:
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing()


class UpstreamPool:
    """Idle keep-alive connections per target, plus connecting new ones.

    :meth:`acquire` returns an idle connection or ``None`` (then call :meth:`connect`);
    :meth:`release` takes back a connection whose last response was complete and reusable.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        idle_timeout: float = 4.0,
        max_idle_per_target: int = 256,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle_per_target
        self._idle: dict[PoolKey, dict[UpstreamConnection, None]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def acquire(self, target: Target) -> UpstreamConnection | None:
        idle = self._idle.get(target.pool_key)
        while idle:
            conn, _ = idle.popitem()
            if conn.usable:
                return conn
            conn.close()
        return None

    async def connect(self, target: Target) -> UpstreamConnection:
        """Open a new connection; raises ``OSError`` or ``TimeoutError`` on failure."""
        loop = asyncio.get_running_loop()
        key = target.pool_key

        def factory() -> UpstreamConnection:
            return UpstreamConnection(self, key)

        async with asyncio.timeout(self.connect_timeout):
            if target.scheme == "unix":
                _, conn = await loop.create_unix_connection(factory, target.host)
            elif target.scheme == "https":
                _, conn = await loop.create_connection(
                    factory, target.host, target.port, ssl=self._client_tls()
                )
            else:
                _, conn = await loop.create_connection(factory, target.host, target.port)
        return conn

    def _client_tls(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection to the idle set (closing it if the set is full)."""
        conn.handler = None
        if not conn.usable:
            conn.close()
            return
        conn.resume_reading()
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = {}
        elif len(idle) >= self.max_idle:
            conn.close()
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        idle[conn] = None
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep, loop)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle is not None:
            idle.pop(conn, None)
            if not idle:
                del self._idle[conn.key]

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        deadline = loop.time() - self.idle_timeout
        for idle in list(self._idle.values()):
            for conn in list(idle):
                if conn.idle_since > deadline:
                    break  # insertion order: the rest rested less long
                conn.close()
        if self._idle:
            self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep, loop)

    @property
    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def close(self) -> None:
        """Close every idle connection (at shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.close()
        self._idle.clear()
