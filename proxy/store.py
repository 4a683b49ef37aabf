"""The route store: the one place that changes the routing table.

It validates keys (:func:`proxy.paths.canonical_key`) and targets, keeps the journal in step
with the table, and turns the monotonic ``last_activity`` readings that traffic leaves on each
:class:`~proxy.routes.Route` into the ISO 8601 timestamps of the REST API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .journal import RouteJournal
from .paths import canonical_key
from .routes import Route, RouteTable, parse_target

__all__ = ["RouteStore", "format_iso", "parse_iso"]

log = logging.getLogger(__name__)


def format_iso(timestamp: float) -> str:
    """``2024-05-01T12:00:00.123Z`` — the format configurable-http-proxy reports."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """Parse an ISO 8601 timestamp (``Z`` or an offset; naive means UTC).

    Raises ``ValueError`` for anything else.
    """
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class RouteStore:
    """Routes by canonical key, with validation, journaling and activity reporting.

    ``clock`` must be the clock traffic uses to stamp ``Route.last_activity`` (the proxy
    passes ``loop.time``); ``wall`` gives the matching wall-clock time.
    """

    def __init__(
        self,
        journal: RouteJournal | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.table = RouteTable()
        self.journal = journal
        self.clock = clock
        self.wall = wall
        self._offset: float | None = None

    def __len__(self) -> int:
        return len(self.table)

    def load(self) -> int:
        """Replay the journal into the table (activity starts now); return the route count."""
        if self.journal is None:
            return 0
        for key, data in self.journal.load().items():
            try:
                self._insert(canonical_key(key), data)
            except ValueError as exc:
                log.warning("Routes file: dropping route %r: %s", key, exc)
        return len(self.table)

    def add(self, key: str, data: Mapping[str, Any]) -> Route:
        """Add or replace a route; ``data`` must hold a ``target`` URL string.

        Raises ``ValueError`` (bad key or target; a client error) or ``OSError`` (the journal
        could not be written; the table is then unchanged).
        """
        key = canonical_key(key)
        stored = {k: v for k, v in data.items() if k != "last_activity"}
        route = Route(key, parse_target(stored.get("target")), stored, self.clock())
        if self.journal is not None:
            self.journal.record_add(key, stored)
        self.table.add(route)
        return route

    def _insert(self, key: str, data: dict[str, Any]) -> Route:
        route = Route(key, parse_target(data.get("target")), data, self.clock())
        self.table.add(route)
        return route

    def remove(self, key: str) -> bool:
        """Remove the route under ``key``; ``False`` if there was none."""
        key = canonical_key(key)
        if key not in self.table:
            return False
        if self.journal is not None:
            self.journal.record_delete(key)
        self.table.remove(key)
        return True

    def get(self, key: str) -> Route | None:
        """The route stored under ``key`` (any accepted spelling), or ``None``."""
        return self.table.get(canonical_key(key))

    def match(self, path: str) -> Route | None:
        """Longest-prefix match of a canonical request path."""
        return self.table.match(path)

    def last_activity(self, route: Route) -> float:
        """Wall-clock time (epoch seconds) of the route's last traffic."""
        return route.last_activity + self._wall_offset()

    def _wall_offset(self) -> float:
        # Kept fixed while the two clocks agree within a second, so that repeated API reads
        # report identical timestamps for an idle route; follows steps of the wall clock.
        fresh = self.wall() - self.clock()
        if self._offset is None or abs(fresh - self._offset) > 1.0:
            self._offset = fresh
        return self._offset

    def model(self, route: Route) -> dict[str, Any]:
        """The API view of a route: its data plus ``target`` and ``last_activity``."""
        model = dict(route.data)
        model["target"] = route.target.url
        model["last_activity"] = format_iso(self.last_activity(route))
        return model

    def models(self, inactive_since: datetime | None = None) -> dict[str, dict[str, Any]]:
        """All routes by key; with ``inactive_since``, only those idle since before it."""
        limit = inactive_since.timestamp() if inactive_since else None
        return {
            route.key: self.model(route)
            for route in self.table
            if limit is None or self.last_activity(route) < limit
        }
