"""Periodic activity reports to the hub (CONTRACTS §3 step 5).

Every ``interval`` seconds the :class:`ActivityReporter` reads the server's last activity
(Jupyter Server's ``web_app.last_activity()``: start time, API requests, kernel and terminal
activity; *now* while a kernel is busy, see :func:`with_busy_kernels`) and, when it moved
since the last successful report, sends::

    POST JUPYTERHUB_ACTIVITY_URL
    Authorization: token <JUPYTERHUB_API_TOKEN>
    {"servers": {"<server name>": {"last_activity": ISO}}, "last_activity": ISO}

Timestamps are UTC ISO 8601 with a ``Z`` suffix. A failed report is logged and retried at the
next tick; it never stops the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from tornado.httpclient import HTTPClientError
from tornado.ioloop import PeriodicCallback

from singleuser.hubclient import HubClient, HubUnavailable

__all__ = ["ActivityReporter", "activity_report", "isoformat", "with_busy_kernels"]

log = logging.getLogger(__name__)


def isoformat(when: datetime) -> str:
    """``when`` as UTC ISO 8601 with a ``Z`` suffix (naive datetimes are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def with_busy_kernels(last_activity: Callable[[], datetime],
                      kernels: Callable[[], Iterable[Mapping[str, Any]]]) -> Callable[[], datetime]:
    """``last_activity``, except that while any kernel is busy it is now: a long computation
    that prints nothing sends no messages, yet its server is in use and the hub's idle culler
    must keep it. ``kernels()`` gives kernel models with ``execution_state``."""

    def latest() -> datetime:
        if any(k.get("execution_state") == "busy" for k in kernels()):
            return datetime.now(UTC)
        return last_activity()

    return latest


def activity_report(server_name: str, when: datetime) -> dict[str, Any]:
    """The JSON body of an activity report for ``server_name`` active at ``when``."""
    stamp = isoformat(when)
    return {"servers": {server_name: {"last_activity": stamp}}, "last_activity": stamp}


class ActivityReporter:
    """Reports ``last_activity()`` to the hub every ``interval`` seconds when it changed."""

    def __init__(
        self,
        client: HubClient,
        activity_url: str,
        server_name: str,
        last_activity: Callable[[], datetime],
        interval: float,
    ) -> None:
        self.client = client
        self.activity_url = activity_url
        self.server_name = server_name
        self.last_activity = last_activity
        self.interval = interval
        self.last_reported: datetime | None = None
        self._callback: PeriodicCallback | None = None

    async def tick(self) -> bool:
        """Send one report if there was activity since the last one; True if one was sent."""
        when = self.last_activity()
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if self.last_reported is not None and when <= self.last_reported:
            return False
        try:
            await self.client.post_activity(
                self.activity_url, activity_report(self.server_name, when)
            )
        except (HubUnavailable, HTTPClientError) as exc:
            log.warning("could not report activity to the hub: %s", exc)
            return False
        self.last_reported = when
        log.debug("reported activity %s", isoformat(when))
        return True

    def start(self) -> None:
        """Start reporting on the running IOLoop (the first report after one interval)."""
        if self._callback is None:
            self._callback = PeriodicCallback(self.tick, self.interval * 1000, jitter=0.1)
            self._callback.start()

    def stop(self) -> None:
        """Stop reporting."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
