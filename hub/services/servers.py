"""``ServerManager``: start, watch and stop user servers; database, proxy and tokens kept in step.

One manager per hub. Each (user, server) has one :class:`~hub.services.lifecycle.State` —
``requested → starting → running → stopping → stopped``, or ``failed`` — changed only through
:meth:`ServerManager._enter`, which checks the transition and stores it (with the reason of a
failure or unexpected stop) in the ``servers`` row. In memory the manager also holds the
spawner, the route target, the task under way and the progress events. The life of a server:

1. :meth:`ServerManager.start` — checks (not stopped → :class:`AlreadyRunning`, too many
   pending spawns → :class:`TooManySpawns`), then in one transaction: the row (``requested``),
   a fresh server API token, the OAuth client (secret = hash of that token). The rest runs in a
   task: ``starting`` — ``spawner.start()`` within ``spawn_start_timeout``, readiness
   (``GET <prefix>api`` answers below 500 within ``spawn_http_timeout``; a process that exits
   meanwhile fails at once), the proxy route — then ``running``.
2. Any failure cleans up completely (``stopping``: process stopped, route removed, token and
   OAuth client revoked) and ends ``failed``, with a :class:`Failure` whose message is safe to
   show and whose ``reason`` is for logs and metrics; the progress stream ends with it.
3. :meth:`ServerManager.stop` — ``stopping`` (route, process, row, token) then ``stopped``; a
   pending start is cancelled instead (and ends ``failed``/``cancelled``); stopping twice is
   harmless.
4. :meth:`ServerManager.poll_loop` notices servers that ended by themselves and records why
   (:meth:`Spawner.exit_reason`); :meth:`ServerManager.reattach`, at hub start, resumes every
   stored state: adopts running servers, finishes interrupted starts and stops, and keeps the
   reasons of stopped servers for their owners' home pages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config
from hub.db.database import transaction
from hub.db.models import OAuthClient, Server, User, utcnow
from hub.services import lifecycle, tokens
from hub.services.lifecycle import State
from hub.services.metrics import HubMetrics
from hub.services.proxy_client import ProxyClient, ProxyError, Route
from hub.services.server_names import (
    access_scopes,
    client_id,
    label,
    oauth_callback_url,
    route_path,
    server_prefix,
    server_token_scopes,
    url_base,
)
from hub.services.server_records import (
    AlreadyRunning,
    Failure,
    NoSuchUser,
    ServerError,
    Slot,
    StartFailed,
    Stored,
    TooManySpawns,
    clear_row,
    exit_reason_of,
    is_final,
    revoke_credentials,
    server_row,
)
from hub.services.spawner import ProgressEvent, Spawner, SpawnerError, http_status

log = logging.getLogger(__name__)

__all__ = ["AlreadyRunning", "Failure", "NoSuchUser", "ServerError", "ServerManager",
           "TooManySpawns"]

#: Key the manager adds to the stored spawner state: the URL the proxy forwards to.
TARGET_KEY = "target"


StopCallback = Callable[[str, str, str], None]
RowUpdate = Callable[[Session, Server], None]


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
        self._slots: dict[tuple[str, str], Slot] = {}
        #: Called as ``cb(user, server, reason)`` whenever a server that ran has stopped
        #: (reason ``stop``, ``crashed``, ``gone`` — found dead at hub start).
        self.on_stopped: list[StopCallback] = []
        #: ``await source(user)``: the auth_state handed to a spawner before its start (see
        #: :attr:`Spawner.auth_state`); set at start-up, None when no authenticator keeps any.
        self.auth_state_source: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None
        #: Spawn, stop and poll durations go here (the hub's own, set at start-up).
        self.metrics = HubMetrics()

    # --- queries -------------------------------------------------------------------------
    @property
    def hub_api_url(self) -> str:
        hub = self._hub_url() if callable(self._hub_url) else self._hub_url
        return hub.rstrip("/") + url_base(self.config.base_url) + "hub/api"

    def state(self, user: str, server: str = "") -> State:
        """Where the server is in its life (``stopped`` for one the manager never saw)."""
        slot = self._slots.get((user, server))
        return slot.state if slot else State.STOPPED

    def pending(self, user: str, server: str = "") -> str | None:
        """``"spawn"``, ``"stop"`` or None (JupyterHub's ``pending`` field)."""
        return self.state(user, server).pending

    def is_ready(self, user: str, server: str = "") -> bool:
        """Whether the server runs, answers and is routed (and is not stopping)."""
        return self.state(user, server) is State.RUNNING

    def failure(self, user: str, server: str = "") -> Failure | None:
        """Why the last start of this server failed, if it did (until the next start)."""
        slot = self._slots.get((user, server))
        return slot.why if slot and slot.state is State.FAILED else None

    def failure_message(self, user: str, server: str = "") -> str | None:
        failure = self.failure(user, server)
        return failure.message if failure else None

    def stop_reason(self, user: str, server: str = "") -> Failure | None:
        """Why a stopped server stopped by itself (a crash, or while the hub was down), until
        its next start; None after a stop someone asked for."""
        slot = self._slots.get((user, server))
        return slot.why if slot and slot.state is State.STOPPED else None

    def stop_message(self, user: str, server: str = "") -> str | None:
        why = self.stop_reason(user, server)
        return why.message if why else None

    def pending_spawns(self) -> int:
        return sum(1 for s in self._slots.values() if s.state.pending == "spawn")

    def spawner(self, user: str, server: str = "") -> Spawner | None:
        """The live spawner of a started or starting server."""
        slot = self._slots.get((user, server))
        return slot.spawner if slot else None

    def wanted_routes(self) -> dict[str, Route]:
        """Routes every running server should have (for the proxy check)."""
        return {
            self._route(slot): Route(slot.target, self._route_data(slot))
            for slot in self._slots.values()
            if slot.state is State.RUNNING and slot.target
        }

    def _route(self, slot: Slot) -> str:
        return route_path(self.config.base_url, slot.user, slot.server)

    @staticmethod
    def _route_data(slot: Slot) -> dict[str, Any]:
        return {"user": slot.user, "server_name": slot.server, "jupyterhub": True}

    def _make_spawner(self, user: str, server: str, options: Mapping[str, Any]) -> Spawner:
        return self.spawner_class(self.config, user, server, hub_api_url=self.hub_api_url,
                                  user_options=options)

    # --- the one place a state changes ---------------------------------------------------
    def _enter(self, slot: Slot, state: State, why: Failure | None = None,
               update: RowUpdate | None = None) -> None:
        """Move ``slot`` to ``state`` (checked against the allowed transitions), store the
        state and ``why`` in its row (plus ``update``, in the same transaction), wake waiters."""
        lifecycle.check(slot.state, state)
        self.metrics.transition((slot.user, slot.server), slot.state, state)
        slot.state, slot.why = state, why
        slot.notify()
        with transaction(self.db) as session:
            row = server_row(session, slot.user, slot.server)
            if row is None:
                return  # removed meanwhile (a deleted user)
            row.lifecycle = state.value
            row.stop_reason, row.stop_message = (why.reason, why.message) if why else (None, None)
            if update is not None:
                update(session, row)

    # --- start ---------------------------------------------------------------------------
    async def start(self, user: str, server: str = "",
                    user_options: Mapping[str, Any] | None = None) -> None:
        """Begin starting a server and return; see :meth:`wait_ready` and
        :meth:`progress_events` for the outcome."""
        key = (user, server)
        old = self._slots.get(key)
        if old is not None and not old.state.down:
            what = {State.RUNNING: "is already running",
                    State.STOPPING: "is stopping; try again shortly"}
            name = label(user, server)
            if old.state.pending:
                self.metrics.refused("already-pending")
            raise AlreadyRunning(
                f"{name[0].upper()}{name[1:]} {what.get(old.state, 'is already starting')}",
                old.state.pending)
        limit = self.config.concurrent_spawn_limit
        if limit > 0 and self.pending_spawns() >= limit:
            # Jitter, so that refused clients do not all come back at the same moment.
            self.metrics.refused("throttled")
            raise TooManySpawns(retry_after=random.randint(5, 15))
        lifecycle.check(old.state if old else State.STOPPED, State.REQUESTED)
        options = dict(user_options or {})
        token = self._prepare(user, server, options)  # raises NoSuchUser before any change
        spawner = self._make_spawner(user, server, options)
        spawner.api_token = token
        slot = Slot(user, server, state=State.REQUESTED, spawner=spawner)
        self._slots[key] = slot
        slot.emit(0, "Server requested")
        slot.task = asyncio.ensure_future(self._run_spawn(slot, spawner))

    async def wait_ready(self, user: str, server: str = "", timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for a start (or stop) under way to settle; True once
        the server is running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slot = self._slots.get((user, server))
            if slot is None or slot.state.settled:
                return self.is_ready(user, server)
            changed = slot.changed
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return self.is_ready(user, server)

    def _prepare(self, user: str, server: str, options: dict[str, Any]) -> str:
        """Row (``requested``), server token and OAuth client, in one transaction; returns
        the token."""
        base = self.config.base_url
        cid = client_id(user, server)
        with transaction(self.db) as session:
            owner = session.scalar(select(User).where(User.name == user))
            if owner is None:
                raise NoSuchUser(f"No such user: {user}")
            row = server_row(session, user, server)
            if row is None:
                row = Server(user=owner, name=server)
                session.add(row)
            row.user_options, row.state, row.started, row.url = options, {}, None, None
            row.lifecycle, row.stop_reason, row.stop_message = State.REQUESTED.value, None, None
            session.flush()
            revoke_credentials(session, row.id, cid)  # leftovers of an earlier run
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

    async def _run_spawn(self, slot: Slot, spawner: Spawner, resume: bool = False) -> None:
        """The start task: launch (unless ``resume``: the process exists), then finish; on any
        failure clean up and end ``failed``. :meth:`stop` cancels it (after ``stopping``)."""
        try:
            if not resume:
                await self._launch(slot, spawner)
            await self._finish_start(slot, spawner)
        except asyncio.CancelledError:
            await self._abort(slot, Failure("The server was stopped before it was ready",
                                            "cancelled"))
            raise
        except StartFailed as e:
            await self._abort(slot, e.failure)
        except Exception:
            log.exception("starting %s failed", label(slot.user, slot.server))
            await self._abort(slot, Failure("Spawn failed: an internal error occurred", "error"))

    async def _launch(self, slot: Slot, spawner: Spawner) -> None:
        """``starting``: the spawner's start, within ``spawn_start_timeout``."""
        cfg = self.config
        if slot.state is not State.STARTING:  # else: a start resumed after a hub restart
            self._enter(slot, State.STARTING)
        spawner.on_state = lambda: self._save_state(slot, spawner)
        timeout = spawner.start_timeout or cfg.spawn_start_timeout
        if self.auth_state_source is not None:
            spawner.auth_state = await self.auth_state_source(slot.user)
        forward = asyncio.ensure_future(self._forward_progress(slot, spawner))
        try:
            try:
                # Not wait_for: on Python 3.11 it returns the result of an inner call that has
                # just finished and swallows a stop()'s cancellation arriving at that moment.
                async with asyncio.timeout(timeout):
                    target = await spawner.start()
            except TimeoutError:
                raise StartFailed(f"Spawn failed: the server did not start within "
                              f"{timeout:g} seconds", "start_timeout") from None
            except SpawnerError as e:
                raise StartFailed(f"Spawn failed: {e}", "spawner_error") from None
            slot.target = target
            self._save_state(slot, spawner)  # findable by a restarted hub from now on
        finally:
            forward.cancel()

    async def _finish_start(self, slot: Slot, spawner: Spawner) -> None:
        """Readiness, the route, then ``running``."""
        target = slot.target
        assert target is not None
        slot.emit(50, "Server started; waiting for it to answer")
        await self._wait_http(slot, spawner, target)
        slot.emit(90, "Server answers; adding its route")
        try:
            await self.proxy.add_route(self._route(slot), target, self._route_data(slot))
        except ProxyError as e:
            log.error("adding the route of %s failed: %s", label(slot.user, slot.server), e)
            raise StartFailed("Spawn failed: the proxy could not be updated",
                              "proxy_error") from None
        url = spawner.prefix
        if slot.state is State.STOPPING:
            # A stop() arrived but its cancellation was swallowed on the way (an inner
            # asyncio.timeout that expired at the same moment converts it): honour it here.
            raise asyncio.CancelledError

        def started(_session: Session, row: Server) -> None:
            row.started = row.last_activity = utcnow()
            row.url = url

        self._enter(slot, State.RUNNING, update=started)
        slot.task = None
        log.info("%s is ready at %s", label(slot.user, slot.server), url)
        slot.emit(100, f"Server ready at {url}", ready=True, url=url)

    async def _forward_progress(self, slot: Slot, spawner: Spawner) -> None:
        try:
            async for event in spawner.progress():
                progress = min(max(int(event.get("progress", 0)), 1), 89)
                slot.emit(progress, str(event.get("message", "")))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("progress of %r failed", spawner, exc_info=True)

    async def _wait_http(self, slot: Slot, spawner: Spawner, target: str) -> None:
        """Until ``GET <target><prefix>api`` answers below 500; fail if the process exits."""
        timeout = self.config.spawn_http_timeout
        deadline = time.monotonic() + timeout
        url = target.rstrip("/") + spawner.prefix + "api"
        delay = 0.02
        while True:
            status = await spawner.poll()
            if status is not None:
                raise StartFailed(f"Spawn failed: the server exited during start-up (status "
                              f"{status}); see its log", "process_exited")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartFailed(f"Spawn failed: the server did not answer within {timeout:g} "
                              "seconds", "http_timeout")
            code = await http_status(url, min(remaining, 10.0))
            if code is not None and code < 500:
                return
            await asyncio.sleep(min(delay, max(remaining, 0)))
            delay = min(delay * 1.5, 0.5)

    async def _abort(self, slot: Slot, failure: Failure) -> None:
        """Undo a failed or cancelled start completely (``stopping``), then ``failed``."""
        log.warning("start of %s failed (%s): %s", label(slot.user, slot.server),
                    failure.reason, failure.message)
        if slot.state is not State.STOPPING:  # a cancelling stop() got there first
            self._enter(slot, State.STOPPING)
        try:
            await self._teardown(slot, now=True)
        except Exception:
            log.exception("cleaning up after %s failed", label(slot.user, slot.server))
        self._enter(slot, State.FAILED, failure, update=clear_row)
        slot.events.append(failure.event())
        slot.notify()

    # --- stop ----------------------------------------------------------------------------
    async def stop(self, user: str, server: str = "", timeout: float | None = None) -> bool:
        """Stop a server (or cancel its pending start). Returns True once it is fully stopped,
        False if still stopping after ``timeout`` seconds (it goes on in the background).
        Stopping a stopped server only makes sure the database agrees."""
        slot = self._slots.get((user, server))
        if slot is None or slot.state.down:
            await self._stop_unknown(user, server)
            return True
        if slot.state is State.RUNNING:
            self._begin_stop(slot, "stop")
        elif slot.state.pending == "spawn":
            self._enter(slot, State.STOPPING)  # the start task cleans up as it is cancelled
            assert slot.task is not None
            slot.task.cancel()
        task = slot.task  # stopping: a stop, or a start that cleans up
        if task is None:
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

    def _begin_stop(self, slot: Slot, reason: str, why: Failure | None = None) -> None:
        """``running → stopping``; the stop runs in ``slot.task``."""
        self._enter(slot, State.STOPPING, why)
        slot.task = asyncio.ensure_future(self._run_stop(slot, reason))

    async def _stop_unknown(self, user: str, server: str) -> None:
        """A server with nothing under way: stop whatever its stored state still names."""
        with transaction(self.db) as session:
            row = server_row(session, user, server)
            state = dict(row.state or {}) if row is not None else {}
        if state:
            spawner = self._make_spawner(user, server, {})
            try:
                spawner.load_state(state)
                await spawner.stop(now=True)
            except Exception:
                log.exception("stopping %s from its stored state failed", label(user, server))
        with transaction(self.db) as session:
            row = server_row(session, user, server)
            if row is not None:
                clear_row(session, row)

    async def _run_stop(self, slot: Slot, reason: str) -> None:
        """The stop task: tear down, then ``stopped`` (keeping why it stopped by itself)."""
        try:
            await self._teardown(slot, now=False)
        except Exception:
            log.exception("stopping %s failed", label(slot.user, slot.server))
            self.metrics.stop_failed((slot.user, slot.server))
        self._enter(slot, State.STOPPED, slot.why, update=clear_row)
        slot.task = None
        log.info("%s stopped (%s)", label(slot.user, slot.server), reason)
        for callback in self.on_stopped:
            try:
                callback(slot.user, slot.server, reason)
            except Exception:
                log.exception("on_stopped callback failed")

    async def _teardown(self, slot: Slot, now: bool) -> None:
        """Route, then process — the process is stopped even if the proxy failed. The row and
        tokens are cleared by the caller's final transition (:func:`clear_row`)."""
        try:
            await self.proxy.delete_route(self._route(slot))
        except ProxyError as e:
            # The proxy check removes stale routes later; the server must stop regardless.
            log.error("removing the route of %s failed: %s", label(slot.user, slot.server), e)
        spawner = slot.spawner
        try:
            if spawner is not None:
                await spawner.stop(now=now)
        finally:
            if spawner is not None:
                spawner.clear_state()
            slot.spawner, slot.target = None, None

    async def stop_all(self) -> None:
        """Stop every server (hub shutdown with ``servers: true``)."""
        keys = [k for k, s in self._slots.items() if not s.state.down]
        await asyncio.gather(*(self.stop(u, s) for u, s in keys))

    async def remove(self, user: str, server: str) -> None:
        """Stop a named server and delete it."""
        if not server:
            raise ServerError("The default server cannot be removed")
        await self.stop(user, server)
        with transaction(self.db) as session:
            row = server_row(session, user, server)
            if row is not None:
                revoke_credentials(session, row.id, client_id(user, server))
                session.delete(row)
        self._slots.pop((user, server), None)

    # --- progress ------------------------------------------------------------------------
    async def progress_events(self, user: str, server: str = "") -> AsyncIterator[ProgressEvent]:
        """Events of the current start, replayed from its beginning, until a final one
        (``ready`` or ``failed``). A running server yields its ready event at once; a stopped
        one why it failed or stopped, or a failed "not running" event."""
        slot = self._slots.get((user, server))
        if slot is None or not slot.streaming:
            if slot is not None and slot.state is State.RUNNING:
                url = server_prefix(self.config.base_url, user, server)
                yield {"progress": 100, "ready": True, "message": f"Server ready at {url}",
                       "url": url}
            elif slot is not None and slot.why is not None:
                yield slot.why.event()
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
                if is_final(event):
                    return
            await changed.wait()

    # --- background: crashes, hub restart ------------------------------------------------
    async def poll_all(self) -> list[tuple[str, str]]:
        """Poll every running server once; clean up those that ended, recording why. Returns
        their (user, server)."""
        dead: list[tuple[str, str]] = []
        for slot in list(self._slots.values()):
            spawner = slot.spawner
            if slot.state is not State.RUNNING or spawner is None:
                continue
            began = time.monotonic()
            try:
                status = await spawner.poll()
            except Exception:
                log.exception("polling %s failed", label(slot.user, slot.server))
                continue
            self.metrics.polled(time.monotonic() - began, status is None)
            if status is None or slot.state is not State.RUNNING:  # a stop began meanwhile
                continue
            why = Failure(exit_reason_of(spawner) or
                          f"the server stopped unexpectedly (exit status {status})", "crashed")
            log.warning("%s exited unexpectedly (status %s): %s", label(slot.user, slot.server),
                        status, why.message)
            self._begin_stop(slot, "crashed", why)
            assert slot.task is not None
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
        """At hub start: resume every stored state (see :meth:`_reattach_one`)."""
        with transaction(self.db) as session:
            rows = [
                Stored(row.user.name, row.name, lifecycle.parse(row.lifecycle),
                        dict(row.state or {}), dict(row.user_options or {}),
                        Failure(row.stop_message, row.stop_reason or "error")
                        if row.stop_message else None)
                for row in session.scalars(select(Server))
                if row.lifecycle != State.STOPPED or row.state or row.stop_message
            ]
        await asyncio.gather(*(self._reattach_one(stored) for stored in rows))

    async def _reattach_one(self, stored: Stored) -> None:
        """Running and alive → adopted; starting and alive → the start goes on; stopped or
        failed → the reason is kept; the rest (dead, or stopping) → stopped and cleaned up."""
        user, server = stored.user, stored.server
        if stored.state.down and not stored.state_dict:
            self._slots[(user, server)] = Slot(user, server, state=stored.state, why=stored.why)
            return
        spawner = self._make_spawner(user, server, stored.options)
        target = stored.state_dict.get(TARGET_KEY)
        resumable = stored.state in (State.RUNNING, State.STARTING) and isinstance(target, str)
        # Held in its stored state, so that what follows is a checked transition; a stopped row
        # that still names a process (a start cut short by an older hub) is, in effect, stopping.
        slot = Slot(user, server, spawner=spawner,
                     state=State.STOPPING if stored.state.down else stored.state,
                     target=target if isinstance(target, str) else None)
        self._slots[(user, server)] = slot
        status: int | None = 0
        try:
            spawner.load_state(stored.state_dict)
            # A start still waiting for its server (a queued batch job) may go on waiting.
            resumable = resumable or (stored.state is State.STARTING and
                                      spawner.can_resume_start)
            status = await spawner.poll() if resumable else 0
        except Exception:
            log.exception("re-attaching %s failed", label(user, server))
        if status is None and slot.state is State.RUNNING:
            log.info("re-attached %s at %s", label(user, server), target)
            try:
                await self.proxy.add_route(self._route(slot), str(target), self._route_data(slot))
            except ProxyError as e:
                # The periodic proxy check adds it once the proxy answers.
                log.error("restoring the route of %s failed: %s", label(user, server), e)
            return
        if status is None:  # starting, and the process is there: finish the start
            log.info("resuming the start of %s", label(user, server))
            slot.emit(50, "The hub restarted; waiting for the server")
            slot.task = asyncio.ensure_future(self._run_spawn(slot, spawner,
                                                              resume=slot.target is not None))
            return
        await self._reattach_dead(slot, stored, spawner)

    async def _reattach_dead(self, slot: Slot, stored: Stored, spawner: Spawner) -> None:
        """A stored server whose process is gone (or a stop or start the hub never finished):
        stop what is left, clean up, and keep why."""
        user, server = slot.user, slot.server
        if stored.state is State.RUNNING:
            log.warning("%s ended while the hub was down; cleaning up", label(user, server))
            why = Failure(exit_reason_of(spawner) or "the server stopped while the hub was down",
                          "gone")
            self._enter(slot, State.STOPPING, why)
            await self._run_stop(slot, "gone")
            return
        if slot.state is not State.STOPPING:
            self._enter(slot, State.STOPPING)
        log.warning("the start or stop of %s was interrupted; cleaning up", label(user, server))
        try:
            await self._teardown(slot, now=True)
        except Exception:
            log.exception("cleaning up %s failed", label(user, server))
        if stored.state.pending == "spawn":
            why = Failure("Spawn failed: the hub restarted while the server was starting",
                          "interrupted")
            self._enter(slot, State.FAILED, why, update=clear_row)
        else:
            self._enter(slot, State.STOPPED, stored.why, update=clear_row)

    # --- database ------------------------------------------------------------------------
    def _save_state(self, slot: Slot, spawner: Spawner) -> None:
        with transaction(self.db) as session:
            row = server_row(session, slot.user, slot.server)
            if row is not None:
                row.state = {**spawner.get_state(), TARGET_KEY: slot.target}
