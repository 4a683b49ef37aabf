"""ServerManager: spawn → ready → route → stop, and every fault of SECURITY.md 14–17.

User servers are real processes (``tests/hub/mockserver.py``); most tests record routes in an
in-memory proxy, the end-to-end ones drive the real ``python -m proxy``. Every process a test
starts is killed by PID at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config, load
from hub.db.database import check_schema, make_engine, make_sessionmaker, transaction
from hub.db.models import APIToken, OAuthClient, Server, User
from hub.services import lifecycle, tokens
from hub.services.lifecycle import State
from hub.services.local_spawner import LocalProcessSpawner
from hub.services.proxy_client import ProxyClient, ProxyError, ProxyLauncher, route_key
from hub.services.server_names import route_path, server_prefix
from hub.services.servers import AlreadyRunning, NoSuchUser, ServerManager, TooManySpawns
from hub.services.spawner import ProgressEvent
from tests.hub import mockserver

BASE = "/my hub@x/"
ODD = "zoë ice@x"
USERS = ("alice", "bob", "carol", "dave", ODD)
HUB_URL = "http://127.0.0.1:1"  # nothing answers there: user servers never call the hub here


class FakeProxy(ProxyClient):
    """An in-memory routing table with the client's interface; ``down`` makes calls fail."""

    def __init__(self) -> None:
        super().__init__("http://fake.invalid", "token")
        self.routes: dict[str, dict[str, Any]] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ProxyError("fake proxy is down")

    async def get_routes(self, inactive_since: datetime | None = None,
                         ) -> dict[str, dict[str, Any]]:
        self._check()
        return {k: dict(v) for k, v in self.routes.items()}

    async def add_route(self, path: str, target: str,
                        data: Mapping[str, Any] | None = None) -> None:
        self._check()
        self.routes[route_key(path)] = {**(data or {}), "target": target}

    async def delete_route(self, path: str) -> None:
        self._check()
        self.routes.pop(route_key(path), None)


class HangingSpawner(LocalProcessSpawner):
    """Starts the process, then never returns from start() (a spawner stuck in its start)."""

    async def start(self) -> str:
        await super().start()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


@dataclass
class Env:
    tmp: Path
    db: sessionmaker[Session]
    managers: list[ServerManager] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def config(self, mode: str = "normal", **changes: Any) -> Config:
        cmd, args = mockserver.command(mode, delay=changes.pop("delay", 2.0))
        values: dict[str, Any] = {
            "data_dir": str(self.tmp / "data"), "base_url": BASE, "singleuser_cmd": cmd,
            "singleuser_args": args, "spawn_start_timeout": 10.0, "spawn_http_timeout": 10.0,
            "server_poll_interval": 0.2, "accounts": "hub",
        }
        return load(environ={}).replace(**{**values, **changes})

    def manager(self, mode: str = "normal", proxy: ProxyClient | None = None,
                spawner: type[LocalProcessSpawner] = LocalProcessSpawner,
                **changes: Any) -> ServerManager:
        mgr = ServerManager(self.config(mode, **changes), self.db, proxy or FakeProxy(),
                            spawner, HUB_URL)
        self.managers.append(mgr)
        return mgr

    def row(self, user: str, server: str = "") -> Server:
        with transaction(self.db) as session:
            row = session.scalar(select(Server).join(Server.user).where(
                User.name == user, Server.name == server))
            assert row is not None
            return row

    def server_tokens(self) -> list[APIToken]:
        with transaction(self.db) as session:
            return list(session.scalars(select(APIToken).where(APIToken.kind == "server")))

    def oauth_clients(self) -> list[OAuthClient]:
        with transaction(self.db) as session:
            return list(session.scalars(select(OAuthClient)))

    def state_pids(self) -> list[int]:
        with transaction(self.db) as session:
            # typed: SQLAlchemy's stubs make this Sequence[Never] under current mypy
            states: list[object] = list(session.scalars(select(Server.state)))
        return [s["pid"] for s in states if isinstance(s, dict) and isinstance(s.get("pid"), int)]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    (tmp_path / "data").mkdir()
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'hub.sqlite'}")
    check_schema(engine)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        session.add_all([User(name=name) for name in USERS])
    e = Env(tmp_path, factory)
    try:
        yield e
    finally:
        pids = list(e.pids) + e.state_pids()
        for mgr in e.managers:
            for slot in list(mgr._slots.values()):
                if slot.task is not None:
                    slot.task.cancel()
                pid = getattr(slot.spawner, "pid", None)
                if pid:
                    pids.append(pid)
        for pid in pids:
            mockserver.kill_pid(pid)
        for mgr in e.managers:  # collect exit statuses (no "still running" Popen warnings)
            for slot in list(mgr._slots.values()):
                if slot.spawner is not None:
                    await slot.spawner.poll()
        engine.dispose()


def pid_of(mgr: ServerManager, user: str, server: str = "") -> int:
    spawner = mgr.spawner(user, server)
    assert isinstance(spawner, LocalProcessSpawner) and spawner.pid
    return spawner.pid


async def wait_pid(mgr: ServerManager, user: str, server: str = "") -> int:
    """The PID of a server being started, once its process exists."""
    deadline = time.monotonic() + 5
    while not getattr(mgr.spawner(user, server), "pid", None):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    return pid_of(mgr, user, server)


async def collect(mgr: ServerManager, user: str, server: str = "") -> list[ProgressEvent]:
    return [event async for event in mgr.progress_events(user, server)]


def assert_clean(env: Env, mgr: ServerManager, user: str, server: str = "") -> None:
    """Stopped everywhere: memory, database, tokens, OAuth client, route."""
    assert mgr.pending(user, server) is None and not mgr.is_ready(user, server)
    row = env.row(user, server)
    assert row.started is None and row.url is None and row.state == {}
    assert not [t for t in env.server_tokens() if t.server_id == row.id]
    assert not [c for c in env.oauth_clients() if c.server_id == row.id]
    assert isinstance(mgr.proxy, FakeProxy)
    assert route_path(BASE, user, server) not in mgr.proxy.routes


# --- the normal life ---------------------------------------------------------------------
async def test_spawn_ready_route_stop(env: Env) -> None:
    mgr = env.manager()
    progress = asyncio.ensure_future(collect(mgr, ODD))  # subscribed before the start
    await mgr.start(ODD, "", {"size": "small"})
    assert mgr.pending(ODD) == "spawn"
    events = await collect(mgr, ODD)
    assert await mgr.wait_ready(ODD, timeout=10)
    assert mgr.is_ready(ODD) and mgr.pending(ODD) is None
    prefix = server_prefix(BASE, ODD)
    assert events[-1] == {"progress": 100, "ready": True, "url": prefix,
                          "message": f"Server ready at {prefix}"}
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
    assert events[0] == {"progress": 0, "message": "Server requested"}
    assert await progress == events
    assert (await collect(mgr, ODD)) == [events[-1]]  # ready: the final event at once

    row = env.row(ODD)
    pid = pid_of(mgr, ODD)
    assert row.started is not None and row.url == prefix and row.user_options == {"size": "small"}
    assert row.state["pid"] == pid and row.state["target"].startswith("http://127.0.0.1:")
    assert isinstance(mgr.proxy, FakeProxy)
    route = mgr.proxy.routes[route_path(BASE, ODD)]
    assert route == {"target": row.state["target"], "user": ODD, "server_name": "",
                     "jupyterhub": True}

    # the token the server got is the stored one, scoped to this server; it is the OAuth secret
    _, body = await asyncio.to_thread(mockserver.http_get, row.state["target"] + prefix + "env")
    server_env = json.loads(body)
    token = server_env["JUPYTERHUB_API_TOKEN"]
    [tok] = env.server_tokens()
    assert tok.hashed == tokens.hash_token(token) and tok.server_id == row.id
    assert sorted(tok.scopes) == [f"access:servers!server={ODD}/", f"users:activity!user={ODD}"]
    [client] = env.oauth_clients()
    assert client.identifier == server_env["JUPYTERHUB_CLIENT_ID"]
    assert client.secret_hash == tokens.hash_token(token)
    assert client.redirect_uri == server_env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == \
        prefix + "oauth_callback"
    assert client.allowed_scopes == json.loads(server_env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"])
    assert server_env["JUPYTERHUB_API_URL"] == HUB_URL + "/my%20hub@x/hub/api"

    stopped: list[tuple[str, str, str]] = []
    mgr.on_stopped.append(lambda u, s, r: stopped.append((u, s, r)))
    assert await mgr.stop(ODD)
    assert_clean(env, mgr, ODD)
    assert not mockserver.pid_alive(pid)
    assert stopped == [(ODD, "", "stop")]
    assert await mgr.stop(ODD)  # repeated stop is harmless
    assert stopped == [(ODD, "", "stop")]
    await mgr.start(ODD)  # and it can start again
    assert await mgr.wait_ready(ODD, timeout=10)
    assert len(env.server_tokens()) == 1 and len(env.oauth_clients()) == 1


async def test_named_servers_are_separate_and_removable(env: Env) -> None:
    mgr = env.manager()
    await mgr.start("alice")
    await mgr.start("alice", "gpu")
    assert await mgr.wait_ready("alice", timeout=10)
    assert await mgr.wait_ready("alice", "gpu", timeout=10)
    assert pid_of(mgr, "alice") != pid_of(mgr, "alice", "gpu")
    assert set(mgr.wanted_routes()) == {route_path(BASE, "alice"),
                                        route_path(BASE, "alice", "gpu")}
    gpu_pid = pid_of(mgr, "alice", "gpu")
    await mgr.remove("alice", "gpu")
    assert not mockserver.pid_alive(gpu_pid)
    with transaction(env.db) as session:
        names = session.scalars(select(Server.name).join(Server.user)
                                .where(User.name == "alice")).all()
    assert names == [""]
    assert mgr.is_ready("alice")
    assert len(env.server_tokens()) == 1


async def test_already_running_and_unknown_user(env: Env) -> None:
    mgr = env.manager()
    await mgr.start("alice")
    with pytest.raises(AlreadyRunning) as pending:
        await mgr.start("alice")
    assert pending.value.pending == "spawn"
    assert await mgr.wait_ready("alice", timeout=10)
    with pytest.raises(AlreadyRunning, match="already running"):
        await mgr.start("alice")
    with pytest.raises(NoSuchUser):
        await mgr.start("nobody")
    assert await mgr.stop("nobody")  # nothing to stop: fine


# --- faults --------------------------------------------------------------------------------
async def test_crash_is_detected_by_the_poll_loop(env: Env) -> None:
    mgr = env.manager()
    await mgr.start("bob")
    assert await mgr.wait_ready("bob", timeout=10)
    pid = pid_of(mgr, "bob")
    reasons: list[str] = []
    mgr.on_stopped.append(lambda u, s, r: reasons.append(r))
    loop = asyncio.ensure_future(mgr.poll_loop())
    try:
        mockserver.kill_pid(pid)
        began = time.monotonic()
        while mgr.is_ready("bob") or mgr.pending("bob"):
            assert time.monotonic() - began < 3, "crash not noticed within the poll interval"
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
    assert reasons == ["crashed"]
    assert_clean(env, mgr, "bob")
    await mgr.start("bob")  # the user can start again
    assert await mgr.wait_ready("bob", timeout=10)


async def test_process_exiting_at_start_fails_fast_and_clean(env: Env) -> None:
    mgr = env.manager("crash")
    began = time.monotonic()
    await mgr.start("carol")
    assert not await mgr.wait_ready("carol", timeout=10)
    assert time.monotonic() - began < 5
    failure = mgr.failure("carol")
    assert failure is not None and failure.reason == "process_exited"
    assert "status 3" in failure.message
    assert (await collect(mgr, "carol")) == [failure.event()]
    assert_clean(env, mgr, "carol")


async def test_start_timeout(env: Env) -> None:
    mgr = env.manager(spawner=HangingSpawner, spawn_start_timeout=0.5)
    await mgr.start("dave")
    spawner = mgr.spawner("dave")
    assert isinstance(spawner, LocalProcessSpawner)
    assert not await mgr.wait_ready("dave", timeout=10)
    failure = mgr.failure("dave")
    assert failure is not None and failure.reason == "start_timeout"
    assert failure.message == "Spawn failed: the server did not start within 0.5 seconds"
    assert_clean(env, mgr, "dave")


async def test_http_timeout_stops_a_server_that_never_answers(env: Env) -> None:
    mgr = env.manager("never-answers", spawn_http_timeout=1.0)
    events = asyncio.ensure_future(collect(mgr, "alice"))
    await mgr.start("alice")
    pid = await wait_pid(mgr, "alice")
    began = time.monotonic()
    assert not await mgr.wait_ready("alice", timeout=10)
    assert time.monotonic() - began < 5
    failure = mgr.failure("alice")
    assert failure is not None and failure.reason == "http_timeout"
    assert not mockserver.pid_alive(pid)
    assert_clean(env, mgr, "alice")
    got = await events
    assert got[-1] == {"progress": 100, "failed": True, "message": failure.message}


async def test_concurrent_spawn_limit(env: Env) -> None:
    mgr = env.manager("slow", delay=2.0, concurrent_spawn_limit=2)
    await mgr.start("alice")
    await mgr.start("bob")
    with pytest.raises(TooManySpawns) as refused:
        await mgr.start("carol")
    assert 0 < refused.value.retry_after <= 60
    with transaction(env.db) as session:  # a refused start changes nothing
        assert session.scalar(select(Server).join(Server.user)
                              .where(User.name == "carol")) is None
    await mgr.stop("alice")
    await mgr.start("carol")  # a slot freed up
    await asyncio.gather(mgr.stop("bob"), mgr.stop("carol"))


async def test_stop_during_pending_start(env: Env) -> None:
    mgr = env.manager("slow", delay=5.0)
    events = asyncio.ensure_future(collect(mgr, "alice"))
    await mgr.start("alice")
    pid = await wait_pid(mgr, "alice")
    began = time.monotonic()
    stopping = asyncio.ensure_future(mgr.stop("alice"))
    await asyncio.sleep(0)
    assert mgr.pending("alice") == "stop"
    assert await stopping
    assert time.monotonic() - began < 4
    assert not mockserver.pid_alive(pid)
    assert_clean(env, mgr, "alice")
    failure = mgr.failure("alice")
    assert failure is not None and failure.reason == "cancelled"
    assert (await events)[-1]["failed"]
    assert await mgr.stop("alice")


@pytest.mark.allow_error_logs(r"the route of .* failed: fake proxy is down")
async def test_proxy_failure_during_start_cleans_up(env: Env) -> None:
    proxy = FakeProxy()
    mgr = env.manager(proxy=proxy)
    proxy.down = True
    await mgr.start("alice")
    assert not await mgr.wait_ready("alice", timeout=10)
    failure = mgr.failure("alice")
    assert failure is not None and failure.reason == "proxy_error"
    proxy.down = False
    assert_clean(env, mgr, "alice")


async def test_reattach_after_hub_restart(env: Env) -> None:
    first = env.manager()
    for user in ("alice", "bob"):
        await first.start(user)
        assert await first.wait_ready(user, timeout=10)
    alive_pid, dead_pid = pid_of(first, "alice"), pid_of(first, "bob")
    env.pids += [alive_pid, dead_pid]
    # The hub "restarts" (the first manager is simply forgotten); bob's server dies meanwhile,
    mockserver.kill_pid(dead_pid)
    # and carol's start was cut short: a live process whose row was never marked started.
    orphan = LocalProcessSpawner(env.config("slow", delay=30.0), "carol",
                                 hub_api_url=HUB_URL + "/hub/api")
    orphan.api_token = "t"
    target = await orphan.start()
    assert orphan.pid
    carol_pid = orphan.pid
    env.pids.append(carol_pid)
    with transaction(env.db) as session:
        carol = session.scalar(select(User).where(User.name == "carol"))
        session.add(Server(user=carol, name="", state={**orphan.get_state(), "target": target}))

    proxy = FakeProxy()
    proxy.routes[route_path(BASE, "bob")] = {"target": "http://127.0.0.1:9", "jupyterhub": True}
    second = env.manager(proxy=proxy)
    await second.reattach()
    assert second.is_ready("alice") and pid_of(second, "alice") == alive_pid
    assert route_path(BASE, "alice") in proxy.routes
    assert_clean(env, second, "bob")
    assert_clean(env, second, "carol")
    assert not mockserver.pid_alive(carol_pid)
    assert await orphan.poll() is not None
    assert await second.stop("alice")
    assert not mockserver.pid_alive(alive_pid)


# --- with the real proxy -------------------------------------------------------------------
@pytest.fixture
async def launcher(env: Env) -> AsyncIterator[ProxyLauncher]:
    cfg = env.config(port=0, proxy_api_port=0)
    proxy = ProxyLauncher(cfg, HUB_URL)
    try:
        await proxy.start()
        yield proxy
    finally:
        if proxy.pid:
            env.pids.append(proxy.pid)
        await proxy.stop()


async def test_route_in_the_real_proxy_and_proxy_restart(env: Env,
                                                         launcher: ProxyLauncher) -> None:
    assert launcher.client is not None and launcher.public_url
    mgr = ServerManager(env.config(), env.db, launcher.client, LocalProcessSpawner, HUB_URL)
    env.managers.append(mgr)
    await mgr.start(ODD)
    assert await mgr.wait_ready(ODD, timeout=10)
    prefix = server_prefix(BASE, ODD)
    routes = await launcher.client.get_routes()
    assert routes[route_key(route_path(BASE, ODD))]["user"] == ODD
    status, body = await asyncio.to_thread(mockserver.http_get,
                                           launcher.public_url + prefix + "files/x")
    assert status == 200 and json.loads(body)["path"] == prefix + "files/x"

    # kill -9 the proxy: the check restarts it and the routes are back
    old_pid = launcher.pid
    assert old_pid
    env.pids.append(old_pid)
    mockserver.kill_pid(old_pid)
    sync = await launcher.check_routes(mgr.wanted_routes())
    assert sync.restarted and launcher.pid != old_pid
    status, body = await asyncio.to_thread(mockserver.http_get,
                                           launcher.public_url + prefix + "files/x")
    assert status == 200

    assert await mgr.stop(ODD)
    assert route_key(route_path(BASE, ODD)) not in await launcher.client.get_routes()
    status, _ = await asyncio.to_thread(mockserver.http_get, launcher.public_url + prefix)
    assert status != 200


# --- the lifecycle: one stored state, a reason on every failure --------------------------
class ExplainingSpawner(LocalProcessSpawner):
    """Explains every exit like a spawner that watched its memory limit would."""

    def exit_reason(self) -> str | None:
        return "the server ran out of memory (limit 512 MiB)"


def test_lifecycle_transitions_are_checked() -> None:
    assert [s.pending for s in State] == ["spawn", "spawn", None, "stop", None, None]
    lifecycle.check(State.STOPPED, State.REQUESTED)
    lifecycle.check(State.STARTING, State.STOPPING)
    lifecycle.check(State.STOPPING, State.FAILED)
    for old, new in [(State.STOPPED, State.RUNNING), (State.RUNNING, State.STOPPED),
                     (State.FAILED, State.STARTING), (State.RUNNING, State.REQUESTED)]:
        with pytest.raises(lifecycle.InvalidTransition):
            lifecycle.check(old, new)
    assert lifecycle.parse("from-a-newer-hub") is State.STOPPED


async def test_every_state_is_stored(env: Env) -> None:
    mgr = env.manager("slow", delay=1.0)
    seen: list[tuple[str, str | None]] = []
    await mgr.start("alice")
    while not mgr.is_ready("alice"):
        row = env.row("alice")
        if not seen or seen[-1] != (row.lifecycle, row.stop_reason):
            seen.append((row.lifecycle, row.stop_reason))
        await asyncio.sleep(0.02)
    assert env.row("alice").lifecycle == "running" and mgr.state("alice") is State.RUNNING
    assert seen[0][0] in ("requested", "starting") and ("starting", None) in seen
    assert await mgr.stop("alice")
    row = env.row("alice")
    assert (row.lifecycle, row.stop_reason, row.stop_message) == ("stopped", None, None)
    assert mgr.stop_reason("alice") is None  # a stop someone asked for has no reason


async def test_failed_start_is_stored_with_its_reason(env: Env) -> None:
    mgr = env.manager("crash")
    await mgr.start("carol")
    assert not await mgr.wait_ready("carol", timeout=10)
    row = env.row("carol")
    assert (row.lifecycle, row.stop_reason) == ("failed", "process_exited")
    assert row.stop_message is not None and "status 3" in row.stop_message
    assert mgr.state("carol") is State.FAILED and mgr.pending("carol") is None


async def test_crash_reason_from_the_spawner_is_kept_until_the_next_start(env: Env) -> None:
    mgr = env.manager(spawner=ExplainingSpawner)
    await mgr.start("bob")
    assert await mgr.wait_ready("bob", timeout=10)
    mockserver.kill_pid(pid_of(mgr, "bob"))
    assert await mgr.poll_all() == [("bob", "")]
    why = mgr.stop_reason("bob")
    assert why is not None and why.reason == "crashed"
    assert why.message == "the server ran out of memory (limit 512 MiB)"
    assert mgr.failure("bob") is None  # it ran: a stop, not a failed start
    assert (await collect(mgr, "bob")) == [why.event()]
    row = env.row("bob")
    assert (row.lifecycle, row.stop_reason, row.stop_message) == ("stopped", "crashed",
                                                                  why.message)
    assert_clean(env, mgr, "bob")

    restarted = env.manager(spawner=ExplainingSpawner)  # a restarted hub still says why
    await restarted.reattach()
    assert restarted.stop_message("bob") == why.message

    await restarted.start("bob")  # the next start forgets it
    assert restarted.stop_reason("bob") is None
    assert env.row("bob").stop_message is None
    assert await restarted.wait_ready("bob", timeout=10)


async def test_generic_reason_without_an_explanation(env: Env) -> None:
    class Mute(LocalProcessSpawner):
        def exit_reason(self) -> str | None:
            return None

    mgr = env.manager(spawner=Mute)
    await mgr.start("dave")
    assert await mgr.wait_ready("dave", timeout=10)
    mockserver.kill_pid(pid_of(mgr, "dave"))
    await mgr.poll_all()
    message = mgr.stop_message("dave")
    assert message is not None
    assert message.startswith("the server stopped unexpectedly (exit status")


async def test_a_restarted_hub_resumes_a_start(env: Env) -> None:
    """A hub that stopped while a server was starting finishes that start when it comes back."""
    starting = LocalProcessSpawner(env.config("slow", delay=1.0), "alice",
                                   hub_api_url=HUB_URL + "/hub/api")
    starting.api_token = "t"
    target = await starting.start()  # the process exists; the hub "died" before it answered
    assert starting.pid
    env.pids.append(starting.pid)
    with transaction(env.db) as session:
        alice = session.scalar(select(User).where(User.name == "alice"))
        session.add(Server(user=alice, name="", lifecycle="starting",
                           state={**starting.get_state(), "target": target}))

    mgr = env.manager("slow", delay=1.0)
    await mgr.reattach()
    assert mgr.pending("alice") == "spawn" and mgr.state("alice") is State.STARTING
    assert await mgr.wait_ready("alice", timeout=10)
    assert pid_of(mgr, "alice") == starting.pid
    row = env.row("alice")
    assert row.lifecycle == "running" and row.started is not None
    assert isinstance(mgr.proxy, FakeProxy) and route_path(BASE, "alice") in mgr.proxy.routes
    assert await mgr.stop("alice")
    assert await starting.poll() is not None


async def test_a_start_interrupted_before_the_process_existed_fails(env: Env) -> None:
    with transaction(env.db) as session:
        bob = session.scalar(select(User).where(User.name == "bob"))
        session.add(Server(user=bob, name="", lifecycle="requested", state={}))
    mgr = env.manager()
    await mgr.reattach()
    failure = mgr.failure("bob")
    assert failure is not None and failure.reason == "interrupted"
    assert env.row("bob").lifecycle == "failed"
    assert_clean(env, mgr, "bob")
