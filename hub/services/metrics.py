"""The hub's Prometheus metrics, with JupyterHub's names and labels (CONTRACTS.md §6).

One :class:`HubMetrics` per hub, on a :class:`~prometheus_client.CollectorRegistry` of its own
(never the process-wide default, so several hubs in one test process stay independent). The
parts of the hub report into it through small calls that cost a dictionary update or one
histogram observation:

- :meth:`HubMetrics.request_logger` wraps the access-log function: every request's duration by
  method, handler class and status code (``jupyterhub_request_duration_seconds``);
- :meth:`HubMetrics.transition` is called by the server manager on every state change:
  ``requested → starting → running`` is a successful spawn, ``… → failed`` a failed one, ``running →
  stopping → stopped`` a stop; :meth:`HubMetrics.refused` counts starts refused as
  ``already-pending`` or ``throttled``; :meth:`HubMetrics.polled` times each server poll;
- :meth:`HubMetrics.proxy_request` times the proxy client's add, delete and whole-table calls,
  :meth:`HubMetrics.routes_checked` the periodic route check;
- :func:`lag_loop` measures how late the event loop wakes up (``himalia_event_loop_lag_seconds``).

What is a count of things — running servers, users, users active in the last 24 h / 7 d / 30 d —
is computed when Prometheus scrapes, by one aggregate query, never per request. Every status
label exists from the start (zero counts), so dashboards and alerts see the series at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.db.database import transaction
from hub.db.models import User, utcnow
from hub.services.lifecycle import State

log = logging.getLogger(__name__)

SPAWN_STATUSES = ("success", "failure", "already-pending", "throttled", "too-many-users")
STOP_STATUSES = ("success", "failure")
POLL_STATUSES = ("running", "stopped")
PROXY_STATUSES = ("success", "failure")
#: ``jupyterhub_active_users`` periods.
ACTIVE_PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
#: Spawns and stops take seconds to minutes (JupyterHub's buckets).
SLOW_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600, float("inf"))
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, float("inf"))
LAG_INTERVAL = 0.5

ServerKey = tuple[str, str]


def _histogram(registry: CollectorRegistry, name: str, doc: str,
               labels: tuple[str, ...] = (), statuses: tuple[str, ...] = (),
               **kw: Any) -> Histogram:
    metric = Histogram(name, doc, list(labels), registry=registry, **kw)
    for status in statuses:
        metric.labels(status)  # the series exists, at zero, before the first event
    return metric


class HubMetrics:
    """Every metric of one hub (see the module docstring); ``registry`` is what
    ``/hub/metrics`` renders (:meth:`render`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        self.request_duration = _histogram(
            r, "jupyterhub_request_duration_seconds", "request duration for all HTTP requests",
            ("method", "handler", "code"))
        self.spawn_duration = _histogram(
            r, "jupyterhub_server_spawn_duration_seconds",
            "time taken for server spawning operation", ("status",), SPAWN_STATUSES,
            buckets=SLOW_BUCKETS)
        self.stop_duration = _histogram(
            r, "jupyterhub_server_stop_seconds", "time taken for server stopping operation",
            ("status",), STOP_STATUSES, buckets=SLOW_BUCKETS)
        self.poll_duration = _histogram(
            r, "jupyterhub_server_poll_duration_seconds", "time taken to poll if server is running",
            ("status",), POLL_STATUSES)
        self.proxy_add = _histogram(
            r, "jupyterhub_proxy_add_duration_seconds", "duration for adding user routes to proxy",
            ("status",), PROXY_STATUSES)
        self.proxy_delete = _histogram(
            r, "jupyterhub_proxy_delete_duration_seconds",
            "duration for deleting user routes from proxy", ("status",), PROXY_STATUSES)
        self.proxy_poll = _histogram(
            r, "jupyterhub_proxy_poll_duration_seconds", "duration to poll proxy")
        self.check_routes = _histogram(
            r, "jupyterhub_check_routes_duration_seconds", "Time taken to validate all routes in "
            "proxy")
        self.hub_startup = _histogram(
            r, "jupyterhub_hub_startup_duration_seconds", "Time taken for Hub to start",
            buckets=SLOW_BUCKETS)
        self.init_spawners = _histogram(
            r, "jupyterhub_init_spawners_duration_seconds", "Time taken for spawners to "
            "initialize", buckets=SLOW_BUCKETS)
        self.loop_lag = _histogram(
            r, "himalia_event_loop_lag_seconds", "How late the hub's event loop woke up for a "
            f"timer (measured every {LAG_INTERVAL:g} s): time spent blocked by other work",
            buckets=LAG_BUCKETS)
        self._spawning: dict[ServerKey, float] = {}
        self._stopping: dict[ServerKey, float] = {}
        self._stop_failed: set[ServerKey] = set()

    def watch(self, db: sessionmaker[Session], running: Callable[[], int]) -> None:
        """Count users (from ``db``) and running servers (``running()``) at each scrape."""
        self.registry.register(_StateCollector(db, running))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # --- requests ------------------------------------------------------------------------
    def request_logger(self, inner: Callable[[Any], None]) -> Callable[[Any], None]:
        """A Tornado ``log_function`` that observes each request, then calls ``inner``."""
        labels = self.request_duration.labels

        def log_function(handler: Any) -> None:
            cls = type(handler)
            labels(handler.request.method, f"{cls.__module__}.{cls.__name__}",
                   str(handler.get_status())).observe(handler.request.request_time())
            inner(handler)

        return log_function

    # --- servers (called by hub.services.servers.ServerManager) --------------------------
    def transition(self, key: ServerKey, old: State, new: State) -> None:
        """A server went from ``old`` to ``new``: start or finish timing a spawn or stop."""
        now = time.monotonic()
        if new is State.REQUESTED:
            self._spawning[key] = now
        elif new is State.STARTING and old is State.REQUESTED:
            # A new start's slot is born ``requested``: its first transition is this one.
            self._spawning.setdefault(key, now)
        elif new is State.RUNNING:
            self._observe(self.spawn_duration, "success", self._spawning.pop(key, None), now)
        elif new is State.FAILED:
            self._stopping.pop(key, None)
            self._stop_failed.discard(key)
            self._observe(self.spawn_duration, "failure", self._spawning.pop(key, None), now)
        elif new is State.STOPPING and old is State.RUNNING:
            self._stopping[key] = now
        elif new is State.STOPPED:
            status = "failure" if key in self._stop_failed else "success"
            self._stop_failed.discard(key)
            self._observe(self.stop_duration, status, self._stopping.pop(key, None), now)

    def stop_failed(self, key: ServerKey) -> None:
        """The stop under way of ``key`` raised (it still ends ``stopped``)."""
        self._stop_failed.add(key)

    def refused(self, status: str) -> None:
        """A start refused at once (``already-pending``, ``throttled``)."""
        self.spawn_duration.labels(status).observe(0)

    def polled(self, seconds: float, running: bool) -> None:
        self.poll_duration.labels("running" if running else "stopped").observe(seconds)

    @staticmethod
    def _observe(metric: Histogram, status: str, since: float | None, now: float) -> None:
        if since is not None:  # e.g. a start resumed after a hub restart: its start is unknown
            metric.labels(status).observe(now - since)

    # --- proxy (called by hub.services.proxy_client) -------------------------------------
    def proxy_request(self, method: str, url: str, seconds: float, ok: bool) -> None:
        """One proxy API call: adds, deletes and reads of the whole table are timed."""
        status = "success" if ok else "failure"
        if method == "POST":
            self.proxy_add.labels(status).observe(seconds)
        elif method == "DELETE":
            self.proxy_delete.labels(status).observe(seconds)
        elif method == "GET" and url.partition("?")[0].endswith("/api/routes"):
            self.proxy_poll.observe(seconds)

    def routes_checked(self, seconds: float) -> None:
        self.check_routes.observe(seconds)


class _StateCollector(Collector):
    """Gauges computed at scrape time: running servers, total and active users."""

    def __init__(self, db: sessionmaker[Session], running: Callable[[], int]) -> None:
        self.db = db
        self.running = running

    def describe(self) -> list[Metric]:
        # Names only: registering must not query the database.
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        counts = [func.count(case((User.last_activity >= now - span, 1)))
                  for span in ACTIVE_PERIODS.values()]
        with transaction(self.db) as session:
            total, *active = session.execute(select(func.count(User.id), *counts)).one()
        yield from self._families(self.running(), total, dict(zip(ACTIVE_PERIODS, active,
                                                                   strict=True)))

    @staticmethod
    def _families(running: int | None = None, total: int | None = None,
                  active: dict[str, int] | None = None) -> Iterator[Metric]:
        yield GaugeMetricFamily("jupyterhub_running_servers",
                                "the number of user servers currently running", value=running)
        yield GaugeMetricFamily("jupyterhub_total_users", "total number of users", value=total)
        family = GaugeMetricFamily("jupyterhub_active_users",
                                   "number of users who were active in the given time period",
                                   labels=["period"])
        for period, count in (active or {}).items():
            family.add_metric([period], count)
        yield family


async def lag_loop(metrics: HubMetrics, interval: float = LAG_INTERVAL) -> None:
    """Every ``interval`` seconds, observe how much later than asked the loop woke up."""
    loop = asyncio.get_running_loop()
    observe = metrics.loop_lag.observe
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        observe(max(loop.time() - asked, 0.0))
