"""WebSocket tunnels: after a ``101 Switching Protocols`` the proxy only moves bytes.

The handshake itself is an ordinary :class:`~proxy.exchange.Exchange` (so routing, errors
and headers follow the HTTP rules); once the target answers ``101`` both connections are
handed to a :class:`Tunnel`. Frames are not parsed: every chunk read on one side is written to
the other, with the same back-pressure as HTTP bodies, and refreshes the route's
``last_activity``. When either side closes, or sends EOF, the other is closed too — so no
half-dead socket outlives its peer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .messages import PAUSE_BACKPRESSURE, Downstream
from .routes import Route

if TYPE_CHECKING:
    from .upstream import UpstreamConnection

__all__ = ["Tunnel"]


class Tunnel:
    """Bidirectional byte pipe between a client connection and a target connection."""

    __slots__ = ("_down", "_now", "_route", "_up")

    def __init__(
        self,
        down: Downstream,
        up: UpstreamConnection,
        route: Route | None,
        now: Callable[[], float],
    ) -> None:
        self._down = down
        self._up = up
        self._route = route
        self._now = now
        up.handler = self
        if down.write_paused:
            up.pause_reading()
        if up.write_paused:
            down.pause_reading(PAUSE_BACKPRESSURE)

    def _touch(self) -> None:
        if self._route is not None:
            self._route.last_activity = self._now()

    # -- client side (called by the client connection)

    def client_data(self, data: bytes) -> None:
        self._up.write(data)
        self._touch()

    def client_paused_writing(self) -> None:
        self._up.pause_reading()

    def client_resumed_writing(self) -> None:
        self._up.resume_reading()

    def client_lost(self) -> None:
        self._up.close()

    # -- target side (called by the upstream connection)

    def upstream_data(self, data: bytes) -> None:
        self._down.write(data)
        self._touch()

    def upstream_lost(self, exc: Exception | None) -> None:
        self._down.close()

    def upstream_paused_writing(self) -> None:
        self._down.pause_reading(PAUSE_BACKPRESSURE)

    def upstream_resumed_writing(self) -> None:
        self._down.resume_reading(PAUSE_BACKPRESSURE)
