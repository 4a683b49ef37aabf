"""``ServerManager``: start, watch and stop user servers; database, proxy and tokens kept in step.

One manager per hub. For each (user, server) it holds a small in-memory record (the spawner,
what is pending, progress events); the database holds what must survive a hub restart
(``Server.started``, ``url`` and the spawner's ``state``). The life of a server:

1. :meth:`ServerManager.start` — checks (already running → :class:`AlreadyRunning`, too many
   pending spawns → :class:`TooManySpawns`), then in one transaction: the ``Server`` row, a fresh
   server API token, the OAuth client (secret = hash of that token). The rest runs in a task:
   ``spawner.start()`` within ``spawn_start_timeout``, readiness (``GET <prefix>api`` answers
   below 500 within ``spawn_http_timeout``; a process that exits meanwhile fails at once), the
   proxy route, then ``started``/``url`` in the database.
2. Any failure cleans up completely (process stopped, route removed, token and OAuth client
   revoked, row marked stopped) and ends the progress stream with a failed event whose message
   is safe to show; the ``reason`` is for logs and metrics.
3. :meth:`ServerManager.stop` — route, process, row, token; during a pending start it cancels the
   start (which cleans up); stopping twice is harmless.
4. :meth:`ServerManager.poll_loop` notices servers that died; :meth:`ServerManager.reattach`, at
   hub start, re-adopts servers that kept running while the hub was down and drops dead ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config
from hub.db.database import transaction
from hub.db.models import APIToken, OAuthClient, Server, User, utcnow
from hub.services import tokens
from hub.services.proxy_client import ProxyClient, ProxyError, Route
from hub.services.spawner import (
    ProgressEvent,
    Spawner,
    SpawnerError,
    access_scopes,
    client_id,
    http_status,
    oauth_callback_url,
    route_path,
    server_prefix,
    server_token_scopes,
    url_base,
)

log = logging.getLogger(__name__)

#: Key the manager adds to the stored spawner state: the URL the proxy forwards to.
TARGET_KEY = "target"


class ServerError(Exception):
    """Base of the manager's errors; ``str(e)`` is safe to show the user."""


class NoSuchUser(ServerError, LookupError):
    """The user does not exist."""


class AlreadyRunning(ServerError):
    """The server is already running, starting or stopping (``pending`` says which)."""

    def __init__(self, message: str, pending: str | None) -> None:
        super().__init__(message)
        self.pending = pending


class TooManySpawns(ServerError):
    """``concurrent_spawn_limit`` servers are already starting; retry after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many servers are starting right now; try again shortly")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Failure:
    """Why a start failed: ``message`` for the user, ``reason`` (a short code) for logs/metrics.

    Reasons: ``start_timeout``, ``http_timeout``, ``process_exited``, ``spawner_error``,
    ``proxy_error``, ``cancelled`` (stopped while starting), ``error`` (unexpected).
    """

    message: str
    reason: str

    def event(self) -> ProgressEvent:
        return {"progress": 100, "failed": True, "message": self.message}


class _Failed(Exception):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.failure = Failure(message, reason)


@dataclass(eq=False)
class _Slot:
    """What the manager knows about one (user, server) in memory."""

    user: str
    server: str
    spawner: Spawner | None = None
    pending: str | None = None  # "spawn" | "stop" | None
    ready: bool = False
    target: str | None = None
    task: asyncio.Task[None] | None = None
    cancellable: bool = False  # a pending start may be cancelled (not while it cleans up)
    events: list[ProgressEvent] = field(default_factory=list)
    failure: Failure | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        """Wake everyone waiting for a change (progress streams, wait_ready)."""
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def emit(self, progress: int, message: str, **extra: Any) -> None:
        last = self.events[-1]["progress"] if self.events else 0
        self.events.append({"progress": max(progress, last), "message": message, **extra})
        self.notify()


StopCallback = Callable[[str, str, str], None]


class ServerManager:
    """Orchestrates user servers (see the module docstring). All methods run on the hub's loop.

    ``hub_url`` is the hub's internal URL as reachable from user servers
    (``http://127.0.0.1:8081``), or a callable returning it; servers get
    ``<hub_url><base_url>hub/api`` as their API URL.
    """

    def __init__(
        self,
        config: Config,
        db: sessionmaker[Session],
        proxy: ProxyClient,
        spawner_class: type[Spawner],
        hub_url: str | Callable[[], str],
    ) -> None:
        self.config = config
        self.db = db
        self.proxy = proxy
        self.spawner_class = spawner_class
        self._hub_url = hub_url
        self._slots: dict[tuple[str, str], _Slot] = {}
        #: Called as ``cb(user, server, reason)`` whenever a server that ran has stopped
        #: (reason ``stop``, ``crashed``, ``gone`` — found dead at hub start).
        self.on_stopped: list[StopCallback] = []

    # --- queries -------------------------------------------------------------------------
    @property
    def hub_api_url(self) -> str:
        hub = self._hub_url() if callable(self._hub_url) else self._hub_url
        return hub.rstrip("/") + url_base(self.config.base_url) + "hub/api"

    def pending(self, user: str, server: str = "") -> str | None:
        """``"spawn"``, ``"stop"`` or None."""
        slot = self._slots.get((user, server))
        return slot.pending if slot else None

    def is_ready(self, user: str, server: str = "") -> bool:
        """Whether the server runs, answers and is routed (and is not stopping)."""
        slot = self._slots.get((user, server))
        return bool(slot and slot.ready and slot.pending is None)

    def failure(self, user: str, server: str = "") -> Failure | None:
        """Why the last start of this server failed, if it did (until the next start)."""
        slot = self._slots.get((user, server))
        return slot.failure if slot else None

    def failure_message(self, user: str, server: str = "") -> str | None:
        failure = self.failure(user, server)
        return failure.message if failure else None

    def pending_spawns(self) -> int:
        return sum(1 for s in self._slots.values() if s.pending == "spawn")

    def spawner(self, user: str, server: str = "") -> Spawner | None:
        """The live spawner of a started or starting server."""
        slot = self._slots.get((user, server))
        return slot.spawner if slot else None

    def wanted_routes(self) -> dict[str, Route]:
        """Routes every ready server should have (for the proxy check)."""
        out: dict[str, Route] = {}
        for slot in self._slots.values():
            if slot.ready and slot.target and slot.pending != "stop":
                out[self._route(slot)] = Route(slot.target, self._route_data(slot))
        return out

    def _route(self, slot: _Slot) -> str:
        return route_path(self.config.base_url, slot.user, slot.server)

    @staticmethod
    def _route_data(slot: _Slot) -> dict[str, Any]:
        return {"user": slot.user, "server_name": slot.server, "jupyterhub": True}

    def _make_spawner(self, user: str, server: str, options: Mapping[str, Any]) -> Spawner:
        return self.spawner_class(self.config, user, server, hub_api_url=self.hub_api_url,
                                  user_options=options)

    # --- start ---------------------------------------------------------------------------
    async def start(self, user: str, server: str = "",
                    user_options: Mapping[str, Any] | None = None) -> None:
        """Begin starting a server and return; see :meth:`wait_ready` and
        :meth:`progress_events` for the outcome."""
        key = (user, server)
        slot = self._slots.get(key)
        if slot is not None and (slot.pending or slot.ready):
            what = {"spawn": "is already starting", "stop": "is stopping; try again shortly"}
            state = what.get(slot.pending or "", "is already running")
            label = _label(user, server)
            raise AlreadyRunning(f"{label[0].upper()}{label[1:]} {state}", slot.pending)
        limit = self.config.concurrent_spawn_limit
        if limit > 0 and self.pending_spawns() >= limit:
            # Jitter, so that refused clients do not all come back at the same moment.
            raise TooManySpawns(retry_after=random.randint(5, 15))
        options = dict(user_options or {})
        token = self._prepare(user, server, options)  # raises NoSuchUser before any change
        spawner = self._make_spawner(user, server, options)
        spawner.api_token = token
        slot = _Slot(user, server, spawner=spawner, pending="spawn", cancellable=True)
        self._slots[key] = slot
        slot.emit(0, "Server requested")
        slot.task = asyncio.ensure_future(self._run_spawn(slot, spawner))

    async def wait_ready(self, user: str, server: str = "", timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds while a start is pending; True once ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slot = self._slots.get((user, server))
            if slot is None or slot.pending != "spawn":
                return self.is_ready(user, server)
            changed = slot.changed
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return self.is_ready(user, server)

    def _prepare(self, user: str, server: str, options: dict[str, Any]) -> str:
        """Row, server token and OAuth client, in one transaction; returns the token."""
        base = self.config.base_url
        cid = client_id(user, server)
        with transaction(self.db) as session:
            owner = session.scalar(select(User).where(User.name == user))
            if owner is None:
                raise NoSuchUser(f"No such user: {user}")
            row = _server_row(session, user, server)
            if row is None:
                row = Server(user=owner, name=server)
                session.add(row)
            row.user_options, row.state, row.started, row.url = options, {}, None, None
            session.flush()
            _revoke(session, row.id, cid)  # leftovers of an earlier run
            token, _ = tokens.create(
                session, user_id=owner.id, kind="server", server_id=row.id,
                scopes=server_token_scopes(user, server),
                note=f"Server at {server_prefix(base, user, server)}",
            )
            session.add(OAuthClient(
                identifier=cid, secret_hash=tokens.hash_token(token),
                redirect_uri=oauth_callback_url(base, user, server),
                allowed_scopes=access_scopes(user, server), server_id=row.id,
                description=f"Server at {server_prefix(base, user, server)}",
            ))
        return token

    async def _run_spawn(self, slot: _Slot, spawner: Spawner) -> None:
        try:
            await self._launch(slot, spawner)
        except asyncio.CancelledError:
            slot.cancellable = False
            await self._abort(slot, Failure("The server was stopped before it was ready",
                                            "cancelled"))
            raise
        except _Failed as e:
            slot.cancellable = False
            await self._abort(slot, e.failure)
        except Exception:
            slot.cancellable = False
            log.exception("starting %s failed", _label(slot.user, slot.server))
            await self._abort(slot, Failure("Spawn failed: an internal error occurred", "error"))

    async def _launch(self, slot: _Slot, spawner: Spawner) -> None:
        cfg = self.config
        forward = asyncio.ensure_future(self._forward_progress(slot, spawner))
        try:
            try:
                target = await asyncio.wait_for(spawner.start(), cfg.spawn_start_timeout)
            except TimeoutError:
                raise _Failed(f"Spawn failed: the server did not start within "
                              f"{cfg.spawn_start_timeout:g} seconds", "start_timeout") from None
            except SpawnerError as e:
                raise _Failed(f"Spawn failed: {e}", "spawner_error") from None
            slot.target = target
            self._save(slot, spawner, started=False)  # findable by a restarted hub from now on
            slot.emit(50, "Server started; waiting for it to answer")
            await self._wait_http(slot, spawner, target)
        finally:
            forward.cancel()
        slot.emit(90, "Server answers; adding its route")
        try:
            await self.proxy.add_route(self._route(slot), target, self._route_data(slot))
        except ProxyError as e:
            log.error("adding the route of %s failed: %s", _label(slot.user, slot.server), e)
            raise _Failed("Spawn failed: the proxy could not be updated", "proxy_error") from None
        self._save(slot, spawner, started=True)
        slot.ready, slot.pending, slot.cancellable, slot.task = True, None, False, None
        url = spawner.prefix
        log.info("%s is ready at %s", _label(slot.user, slot.server), url)
        slot.emit(100, f"Server ready at {url}", ready=True, url=url)

    async def _forward_progress(self, slot: _Slot, spawner: Spawner) -> None:
        try:
            async for event in spawner.progress():
                progress = min(max(int(event.get("progress", 0)), 1), 89)
                slot.emit(progress, str(event.get("message", "")))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("progress of %r failed", spawner, exc_info=True)

    async def _wait_http(self, slot: _Slot, spawner: Spawner, target: str) -> None:
        """Until ``GET <target><prefix>api`` answers below 500; fail if the process exits."""
        timeout = self.config.spawn_http_timeout
        deadline = time.monotonic() + timeout
        url = target.rstrip("/") + spawner.prefix + "api"
        delay = 0.02
        while True:
            status = await spawner.poll()
            if status is not None:
                raise _Failed(f"Spawn failed: the server exited during start-up (status "
                              f"{status}); see its log", "process_exited")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Failed(f"Spawn failed: the server did not answer within {timeout:g} "
                              "seconds", "http_timeout")
            code = await http_status(url, min(remaining, 10.0))
            if code is not None and code < 500:
                return
            await asyncio.sleep(min(delay, max(remaining, 0)))
            delay = min(delay * 1.5, 0.5)

    async def _abort(self, slot: _Slot, failure: Failure) -> None:
        """Undo a failed or cancelled start completely, then publish the failure."""
        log.warning("start of %s failed (%s): %s", _label(slot.user, slot.server),
                    failure.reason, failure.message)
        try:
            await self._teardown(slot, now=True)
        except Exception:
            log.exception("cleaning up after %s failed", _label(slot.user, slot.server))
        slot.failure = failure
        slot.events.append(failure.event())
        slot.notify()

    # --- stop ----------------------------------------------------------------------------
    async def stop(self, user: str, server: str = "", timeout: float | None = None) -> bool:
        """Stop a server (or cancel its pending start). Returns True once it is fully stopped,
        False if still stopping after ``timeout`` seconds (it goes on in the background).
        Stopping a stopped server only makes sure the database agrees."""
        slot = self._slots.get((user, server))
        if slot is None or (slot.task is None and not slot.ready):
            await self._stop_unknown(user, server)
            return True
        if slot.task is None:  # ready: start a stop
            slot.pending = "stop"
            slot.notify()
            slot.task = asyncio.ensure_future(self._run_stop(slot, "stop"))
        elif slot.pending == "spawn" and slot.cancellable:
            slot.pending = "stop"
            slot.cancellable = False
            slot.notify()
            slot.task.cancel()
        task = slot.task
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

    async def _stop_unknown(self, user: str, server: str) -> None:
        """A server the manager holds no record of: stop whatever its stored state names."""
        with transaction(self.db) as session:
            row = _server_row(session, user, server)
            state = dict(row.state or {}) if row is not None else {}
        if state:
            spawner = self._make_spawner(user, server, {})
            try:
                spawner.load_state(state)
                await spawner.stop(now=True)
            except Exception:
                log.exception("stopping %s from its stored state failed", _label(user, server))
        self._mark_stopped(user, server)

    async def _run_stop(self, slot: _Slot, reason: str) -> None:
        try:
            await self._teardown(slot, now=False)
        except Exception:
            log.exception("stopping %s failed", _label(slot.user, slot.server))
        log.info("%s stopped (%s)", _label(slot.user, slot.server), reason)
        for callback in self.on_stopped:
            try:
                callback(slot.user, slot.server, reason)
            except Exception:
                log.exception("on_stopped callback failed")

    async def _teardown(self, slot: _Slot, now: bool) -> None:
        """Route, process, database, tokens — each step runs even if an earlier one failed."""
        try:
            await self.proxy.delete_route(self._route(slot))
        except ProxyError as e:
            # The proxy check removes stale routes later; the server must stop regardless.
            log.error("removing the route of %s failed: %s", _label(slot.user, slot.server), e)
        spawner = slot.spawner
        try:
            if spawner is not None:
                await spawner.stop(now=now)
        finally:
            self._mark_stopped(slot.user, slot.server)
            if spawner is not None:
                spawner.clear_state()
            slot.spawner, slot.target, slot.task = None, None, None
            slot.ready, slot.pending, slot.cancellable = False, None, False
            slot.notify()

    async def stop_all(self) -> None:
        """Stop every server (hub shutdown with ``servers: true``)."""
        keys = [k for k, s in self._slots.items() if s.ready or s.pending]
        await asyncio.gather(*(self.stop(u, s) for u, s in keys))

    async def remove(self, user: str, server: str) -> None:
        """Stop a named server and delete it."""
        if not server:
            raise ServerError("The default server cannot be removed")
        await self.stop(user, server)
        with transaction(self.db) as session:
            row = _server_row(session, user, server)
            if row is not None:
                _revoke(session, row.id, client_id(user, server))
                session.delete(row)
        self._slots.pop((user, server), None)

    # --- progress ------------------------------------------------------------------------
    async def progress_events(self, user: str, server: str = "") -> AsyncIterator[ProgressEvent]:
        """Events of the current start, replayed from its beginning, until a final one
        (``ready`` or ``failed``). A ready server yields its ready event at once; a stopped
        one the failure of its last start, or a failed "not running" event."""
        slot = self._slots.get((user, server))
        if slot is None or slot.pending != "spawn":
            if slot is not None and slot.ready and slot.pending is None:
                url = server_prefix(self.config.base_url, user, server)
                yield {"progress": 100, "ready": True, "message": f"Server ready at {url}",
                       "url": url}
            elif slot is not None and slot.failure is not None:
                yield slot.failure.event()
            else:
                yield {"progress": 100, "failed": True, "message": "The server is not running"}
            return
        events = slot.events  # this start's list; a later start gets a new one
        index = 0
        while True:
            changed = slot.changed
            while index < len(events):
                event = events[index]
                index += 1
                yield event
                if event.get("ready") or event.get("failed"):
                    return
            await changed.wait()

    # --- background: crashes, hub restart ------------------------------------------------
    async def poll_all(self) -> list[tuple[str, str]]:
        """Poll every running server once; clean up the dead. Returns their (user, server)."""
        dead: list[tuple[str, str]] = []
        for slot in list(self._slots.values()):
            if not slot.ready or slot.pending or slot.spawner is None:
                continue
            try:
                status = await slot.spawner.poll()
            except Exception:
                log.exception("polling %s failed", _label(slot.user, slot.server))
                continue
            if status is None or slot.pending or not slot.ready:
                continue
            log.warning("%s exited unexpectedly (status %s)", _label(slot.user, slot.server),
                        status)
            slot.pending = "stop"
            slot.task = asyncio.ensure_future(self._run_stop(slot, "crashed"))
            await asyncio.wait({slot.task})
            dead.append((slot.user, slot.server))
        return dead

    async def poll_loop(self) -> None:
        """:meth:`poll_all` every ``server_poll_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.config.server_poll_interval)
            try:
                await self.poll_all()
            except Exception:
                log.exception("server poll failed")

    async def reattach(self) -> None:
        """At hub start: adopt servers that are still running, clean up the rest."""
        with transaction(self.db) as session:
            rows = [
                (row.user.name, row.name, row.started is not None, dict(row.state or {}),
                 dict(row.user_options or {}))
                for row in session.scalars(select(Server))
                if row.started is not None or row.state
            ]
        for user, server, started, state, options in rows:
            await self._reattach_one(user, server, started, state, options)

    async def _reattach_one(self, user: str, server: str, started: bool, state: dict[str, Any],
                            options: dict[str, Any]) -> None:
        spawner = self._make_spawner(user, server, options)
        slot = _Slot(user, server, spawner=spawner)
        self._slots[(user, server)] = slot
        try:
            spawner.load_state(state)
            alive = await spawner.poll() is None
        except Exception:
            log.exception("re-attaching %s failed", _label(user, server))
            alive = False
        target = state.get(TARGET_KEY)
        if alive and started and isinstance(target, str):
            slot.ready, slot.target = True, target
            log.info("re-attached %s at %s", _label(user, server), target)
            try:
                await self.proxy.add_route(self._route(slot), target, self._route_data(slot))
            except ProxyError as e:
                # The periodic proxy check adds it once the proxy answers.
                log.error("restoring the route of %s failed: %s", _label(user, server), e)
            return
        # Dead, or a start the hub never finished: stop whatever is left, then clean up.
        log.warning("%s is gone (or its start was interrupted); cleaning up", _label(user, server))
        slot.pending = "stop"
        await self._run_stop(slot, "gone" if started else "interrupted")

    # --- database ------------------------------------------------------------------------
    def _save(self, slot: _Slot, spawner: Spawner, started: bool) -> None:
        with transaction(self.db) as session:
            row = _server_row(session, slot.user, slot.server)
            if row is None:
                return
            row.state = {**spawner.get_state(), TARGET_KEY: slot.target}
            if started:
                now = utcnow()
                row.started, row.last_activity = now, now
                row.url = server_prefix(self.config.base_url, slot.user, slot.server)

    def _mark_stopped(self, user: str, server: str) -> None:
        """Row stopped, server token and OAuth client revoked."""
        with transaction(self.db) as session:
            row = _server_row(session, user, server)
            if row is None:
                return
            row.started, row.url, row.state = None, None, {}
            _revoke(session, row.id, client_id(user, server))


def _label(user: str, server: str) -> str:
    # repr() keeps odd names (newlines, control characters) harmless in logs and messages.
    return f"server {server!r} of {user!r}" if server else f"the server of {user!r}"


def _server_row(session: Session, user: str, server: str) -> Server | None:
    return session.scalar(
        select(Server).join(Server.user).where(User.name == user, Server.name == server)
    )


def _revoke(session: Session, server_id: int, cid: str) -> None:
    """Delete the server's API tokens (the hub's identity cache sees it) and OAuth client."""
    session.execute(delete(APIToken).where(APIToken.server_id == server_id,
                                           APIToken.kind == "server"))
    session.execute(delete(OAuthClient).where(OAuthClient.identifier == cid))
