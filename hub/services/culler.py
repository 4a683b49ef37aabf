"""The built-in idle culler: stop servers nobody has used for ``cull_idle_timeout`` seconds.

On by default (one hour), as in The Littlest JupyterHub. Every ``cull_every`` seconds
:meth:`Culler.cull_once`:

1. reads the proxy's routing table (``GET /api/routes``): each user route's ``last_activity``
   is the last time traffic went through it — HTTP requests and WebSocket frames both;
2. takes, for each running server, the latest of: that route activity, the activity the server
   reported itself (``POST /users/NAME/activity``, stored as the server's ``last_activity``;
   ``himalia-singleuser`` reports API requests, kernel and terminal activity, and the current
   time while a kernel is busy, so a long silent computation keeps its server), and its start
   time;
3. writes newer proxy activity back to the servers' and users' ``last_activity`` (so the REST
   API and the active-user metrics see browser traffic too), in one transaction;
4. stops every server idle longer than ``cull_idle_timeout`` and, with ``cull_max_age``, every
   server running longer than that, busy or not; with ``cull_users``, then deletes each culled
   server's owner who is not an admin and has no server left running.

If the proxy cannot be read, the check goes on with the activity servers reported (a slow
proxy must not stop busy servers, so route activity only ever adds to it). With
``cull_idle_timeout = 0`` and no ``cull_max_age`` the loop does not run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config
from hub.db.database import transaction
from hub.db.models import Server, User, utcnow
from hub.services import users
from hub.services.lifecycle import State
from hub.services.proxy_client import ProxyClient, ProxyError
from hub.services.server_names import label
from hub.services.servers import ServerManager

log = logging.getLogger(__name__)

#: Longest pause between two checks when ``cull_every`` is 0 (a tenth of the timeout).
MAX_DEFAULT_EVERY = 300.0
#: Stops under way at once (as jupyterhub-idle-culler's default concurrency).
CONCURRENCY = 10

ServerKey = tuple[str, str]


@dataclass(frozen=True)
class _Running:
    """One running server as the culler sees it."""

    user: str
    server: str
    started: datetime
    last_activity: datetime


@dataclass(frozen=True)
class Decision:
    """A server to stop, and why (``idle`` or ``age``), for logs and tests."""

    user: str
    server: str
    reason: str
    seconds: float


def interval(cfg: Config) -> float:
    """Seconds between two checks: ``cull_every``, else a tenth of the timeout (≤ 300 s)."""
    if cfg.cull_every > 0:
        return cfg.cull_every
    base = cfg.cull_idle_timeout or cfg.cull_max_age
    return max(min(base / 10, MAX_DEFAULT_EVERY), 1.0)


def enabled(cfg: Config) -> bool:
    return cfg.cull_idle_timeout > 0 or cfg.cull_max_age > 0


def decide(cfg: Config, running: list[_Running], now: datetime) -> list[Decision]:
    """Which of ``running`` to stop at ``now`` (pure logic)."""
    out: list[Decision] = []
    for srv in running:
        idle = (now - srv.last_activity).total_seconds()
        age = (now - srv.started).total_seconds()
        if cfg.cull_idle_timeout > 0 and idle > cfg.cull_idle_timeout:
            out.append(Decision(srv.user, srv.server, "idle", idle))
        elif cfg.cull_max_age > 0 and age > cfg.cull_max_age:
            out.append(Decision(srv.user, srv.server, "age", age))
    return out


def parse_time(value: Any) -> datetime | None:
    """A proxy's ISO 8601 ``last_activity`` as naive UTC; None if absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return stamp


def route_activity(routes: Mapping[str, Mapping[str, Any]]) -> dict[ServerKey, datetime]:
    """``(user, server) → last_activity`` of the user routes in a proxy table."""
    out: dict[ServerKey, datetime] = {}
    for data in routes.values():
        user, stamp = data.get("user"), parse_time(data.get("last_activity"))
        if isinstance(user, str) and stamp is not None:
            key = (user, str(data.get("server_name") or ""))
            out[key] = max(stamp, out.get(key, stamp))
    return out


class Culler:
    """Stops idle (and, optionally, too old) servers; see the module docstring."""

    def __init__(self, config: Config, db: sessionmaker[Session], servers: ServerManager,
                 proxy: ProxyClient) -> None:
        self.config = config
        self.db = db
        self.servers = servers
        self.proxy = proxy

    async def cull_loop(self) -> None:
        """:meth:`cull_once` every :func:`interval` seconds, until cancelled (returns at once
        when culling is off)."""
        if not enabled(self.config):
            log.info("culling is off (cull_idle_timeout and cull_max_age are 0)")
            return
        every = interval(self.config)
        log.info("culling servers idle for %gs (checked every %gs)%s",
                 self.config.cull_idle_timeout, every,
                 f", or running for {self.config.cull_max_age:g}s" if self.config.cull_max_age
                 else "")
        while True:
            await asyncio.sleep(every)
            try:
                await self.cull_once()
            except Exception:
                log.exception("culling idle servers failed")

    async def cull_once(self) -> list[Decision]:
        """One check: record route activity, stop what is idle or too old; returns what was
        stopped."""
        try:
            seen = route_activity(await self.proxy.get_routes())
        except ProxyError as e:
            log.warning("culler: cannot read the proxy's route activity (%s); using the "
                        "activity servers reported", e)
            seen = {}
        running = self._running(seen)
        decisions = decide(self.config, running, utcnow())
        if not decisions:
            return []
        limit = asyncio.Semaphore(CONCURRENCY)

        async def stop(d: Decision) -> None:
            async with limit:
                await self._stop(d)

        await asyncio.gather(*(stop(d) for d in decisions))
        if self.config.cull_users:
            self._remove_users({d.user for d in decisions})
        return decisions

    def _running(self, seen: Mapping[ServerKey, datetime]) -> list[_Running]:
        """Running servers with their activity, newer route activity saved on the way."""
        wanted = {(str(r.data.get("user")), str(r.data.get("server_name") or ""))
                  for r in self.servers.wanted_routes().values()}
        out: list[_Running] = []
        with transaction(self.db) as session:
            rows = session.execute(
                select(Server, User).join(Server.user)
                .where(Server.lifecycle == State.RUNNING.value, Server.started.is_not(None))
            ).all()
            for server, user in rows:
                key = (user.name, server.name)
                if key not in wanted:
                    continue  # stopping, or not (yet) routed: nothing to cull
                routed = seen.get(key)
                if routed is not None and (server.last_activity is None
                                           or routed > server.last_activity):
                    users.record_activity(user, {server.name: routed})
                assert server.started is not None
                last = max(server.last_activity or server.started, server.started)
                out.append(_Running(user.name, server.name, server.started, last))
        return out

    async def _stop(self, d: Decision) -> None:
        name = label(d.user, d.server)
        if d.reason == "idle":
            log.info("culling %s: idle for %s", name, timedelta(seconds=int(d.seconds)))
        else:
            log.info("culling %s: running for %s (cull_max_age)", name,
                     timedelta(seconds=int(d.seconds)))
        try:
            await self.servers.stop(d.user, d.server)
        except Exception:
            log.exception("culling %s failed", name)

    def _remove_users(self, names: set[str]) -> None:
        """Delete users (never admins) who have no server running or pending any more."""
        for name in sorted(names):
            with transaction(self.db) as session:
                user = users.get(session, name)
                if user is None or user.admin:
                    continue
                if any(not self.servers.state(name, s.name).down for s in user.servers):
                    continue  # another server still runs (or is starting or stopping)
                log.info("culling user %s: no server left running (cull_users)", name)
                users.delete(session, user)
