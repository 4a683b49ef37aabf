"""The shapes the data path passes around: a parsed request, the shared context, and the
interfaces between the client side, the target side and what sits in between.

A client connection (:mod:`proxy.server`) parses requests and hands each one to an
:class:`~proxy.exchange.Exchange`, or after a WebSocket handshake to a
:class:`~proxy.websocket.Tunnel`. Both talk to the client through :class:`Downstream` and
receive target events through :class:`UpstreamHandler`; this module only names those calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .headers import Forwarded, RequestHeaders

if TYPE_CHECKING:
    from .errors import ErrorPages
    from .metrics import ProxyStats
    from .store import RouteStore
    from .upstream import UpstreamPool

__all__ = [
    "PAUSE_BACKPRESSURE",
    "PAUSE_BUFFER",
    "PAUSE_PIPELINE",
    "PAUSE_UPGRADE",
    "ClientHandler",
    "Downstream",
    "ProxyContext",
    "Request",
    "UpstreamHandler",
]

# Reasons a client connection stops reading; reading resumes when none is left.
PAUSE_BACKPRESSURE = 1  # the target cannot take the request body as fast as it comes
PAUSE_BUFFER = 2  # body arrives before the target connection is ready
PAUSE_PIPELINE = 4  # a pipelined request waits for the one before it
PAUSE_UPGRADE = 8  # a WebSocket handshake is under way


@dataclass(slots=True, eq=False)
class Request:
    """One parsed request head. ``url`` is the raw request-target, forwarded unchanged;
    ``path`` the canonical path it was routed by (host-prefixed with host routing)."""

    method: bytes
    url: bytes
    path: str
    headers: RequestHeaders
    http10: bool
    keep_alive: bool
    started: float

    @property
    def has_body(self) -> bool:
        return self.headers.chunked or self.headers.content_length


@dataclass(slots=True)
class ProxyContext:
    """Everything the data path needs, built once by :class:`proxy.app.ProxyServer`."""

    store: RouteStore
    pool: UpstreamPool
    error_pages: ErrorPages
    now: Callable[[], float]
    host_routing: bool = False
    keep_alive_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 200
    stats: ProxyStats | None = None  # None with --no-metrics


class Downstream(Protocol):
    """The client connection as seen by an exchange or tunnel."""

    write_paused: bool
    forwarded: Forwarded

    def write(self, data: bytes) -> None: ...
    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...
    def exchange_done(self, exchange: object, keep_alive: bool) -> None: ...
    def start_tunnel(self, tunnel: ClientHandler) -> None: ...
    def close(self) -> None: ...


class ClientHandler(Protocol):
    """What the client connection drives: the current exchange, or a tunnel."""

    def client_data(self, data: bytes) -> None: ...
    def client_paused_writing(self) -> None: ...
    def client_resumed_writing(self) -> None: ...
    def client_lost(self) -> None: ...


class UpstreamHandler(Protocol):
    """What a target connection reports to while it serves an exchange or tunnel."""

    def upstream_data(self, data: bytes) -> None: ...
    def upstream_lost(self, exc: Exception | None) -> None: ...
    def upstream_paused_writing(self) -> None: ...
    def upstream_resumed_writing(self) -> None: ...
