"""The built-in idle culler: real hubs with second-long timeouts and fake servers, and its
decisions without sockets."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from hub import config
from hub.services import culler
from tests.hub.apitools import config_hub
from tests.hubproc import HubProcess


def _start(hub: HubProcess, user: str) -> None:
    assert hub.api("POST", f"/users/{user}/server").status_code in (201, 202)
    hub.wait_for(lambda: hub.api("GET", f"/users/{user}").json()["server"])


def _env(hub: HubProcess, user: str) -> dict[str, str]:
    """The environment of ``user``'s running (fake) server: its token and activity URL."""
    r = requests.get(f"{hub.url}user/{user}/env", timeout=10)
    assert r.status_code == 200, r.text[:200]
    env: dict[str, str] = r.json()
    return env


def _running(hub: HubProcess, user: str) -> bool:
    r = hub.api("GET", f"/users/{user}")
    return r.status_code == 200 and bool(r.json()["server"])


def _report(env: dict[str, str]) -> int:
    """What a single-user server with a busy kernel sends (CONTRACTS §3 step 5); the status."""
    stamp = datetime.now(UTC).isoformat()
    r = requests.post(env["JUPYTERHUB_ACTIVITY_URL"], timeout=10,
                      headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"},
                      json={"servers": {"": {"last_activity": stamp}}, "last_activity": stamp})
    return r.status_code


@pytest.mark.slow
def test_idle_servers_are_culled_active_ones_kept(make_hub: Any, tmp_path: Any) -> None:
    hub = config_hub(make_hub, tmp_path, cull_idle_timeout=3.0, cull_every=0.5)
    idle, _ = hub.new_user("idle")
    busy, _ = hub.new_user("busy")
    browsing, _ = hub.new_user("web")
    for user in (idle, busy, browsing):
        _start(hub, user)
    busy_env = _env(hub, busy)
    began = time.monotonic()
    idle_gone_at = None
    while time.monotonic() - began < 8:  # well past the timeout, for the two active ones
        assert _report(busy_env) == 204  # activity the server reports (a busy kernel)
        assert requests.get(f"{hub.url}user/{browsing}/lab", timeout=10).status_code == 200
        if idle_gone_at is None and not _running(hub, idle):
            idle_gone_at = time.monotonic() - began
        time.sleep(0.5)
    assert idle_gone_at is not None and idle_gone_at < 7, idle_gone_at
    assert _running(hub, busy) and _running(hub, browsing)
    # Traffic through the proxy was recorded as the server's and user's activity.
    model = hub.api("GET", f"/users/{browsing}").json()
    seen = datetime.fromisoformat(model["servers"][""]["last_activity"].replace("Z", "+00:00"))
    assert datetime.now(UTC) - seen.astimezone(UTC) < timedelta(seconds=5)
    assert f"culling the server of {idle!r}: idle for" in hub.log_text()
    # Once left alone, they are culled too; the users stay (cull_users is off).
    hub.wait_for(lambda: not _running(hub, busy) and not _running(hub, browsing), timeout=15)
    assert hub.api("GET", f"/users/{idle}").status_code == 200


@pytest.mark.slow
def test_max_age_and_cull_users(make_hub: Any, tmp_path: Any) -> None:
    hub = config_hub(make_hub, tmp_path, cull_idle_timeout=0.0, cull_max_age=3.0,
                     cull_every=0.5, cull_users=True)
    user, _ = hub.new_user("old")
    _start(hub, user)
    _start(hub, "admin")
    began = time.monotonic()
    while hub.api("GET", f"/users/{user}").status_code == 200:
        stamp = datetime.now(UTC).isoformat()  # busy or not: too old
        hub.api("POST", f"/users/{user}/activity", json={"last_activity": stamp})
        assert time.monotonic() - began < 20, "the user was not culled"
        time.sleep(0.3)
    hub.wait_for(lambda: not _running(hub, "admin"), timeout=10)
    assert hub.api("GET", "/users/admin").status_code == 200  # admins are never removed


def test_culling_can_be_turned_off(make_hub: Any, tmp_path: Any) -> None:
    hub = config_hub(make_hub, tmp_path, cull_idle_timeout=0.0)
    hub.wait_for(lambda: "culling is off" in hub.log_text(), timeout=10)


# --- without sockets ---------------------------------------------------------------------------
@contextlib.contextmanager
def socket_closed() -> Iterator[int]:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _cfg(**kw: Any) -> config.Config:
    return config.Config().replace(**kw)


def test_defaults_and_interval() -> None:
    default = config.Config()
    assert culler.enabled(default) and default.cull_idle_timeout == 3600
    assert culler.interval(default) == 300
    assert culler.interval(_cfg(cull_idle_timeout=60.0)) == 6
    assert culler.interval(_cfg(cull_idle_timeout=60.0, cull_every=2.0)) == 2
    assert not culler.enabled(_cfg(cull_idle_timeout=0.0))
    assert culler.enabled(_cfg(cull_idle_timeout=0.0, cull_max_age=100.0))


def test_decide() -> None:
    now = datetime(2026, 1, 1, 12)
    fresh = culler._Running("a", "", now - timedelta(hours=5), now - timedelta(minutes=5))
    idle = culler._Running("b", "gpu", now - timedelta(hours=5), now - timedelta(hours=2))
    cfg = _cfg(cull_idle_timeout=3600.0)
    assert [(d.user, d.server, d.reason) for d in culler.decide(cfg, [fresh, idle], now)] == [
        ("b", "gpu", "idle")]
    aged = _cfg(cull_idle_timeout=3600.0, cull_max_age=4 * 3600.0)
    assert [(d.user, d.reason) for d in culler.decide(aged, [fresh, idle], now)] == [
        ("a", "age"), ("b", "idle")]
    assert culler.decide(_cfg(cull_idle_timeout=0.0), [fresh, idle], now) == []


def test_route_activity() -> None:
    routes: dict[str, dict[str, Any]] = {
        "/user/a": {"user": "a", "server_name": "", "last_activity": "2026-01-01T10:00:00.000Z"},
        "/user/a/gpu": {"user": "a", "server_name": "gpu",
                        "last_activity": "2026-01-01T12:00:00+02:00"},
        "/": {"hub": True, "last_activity": "2026-01-01T10:00:00Z"},
        "/user/b": {"user": "b", "last_activity": "not a time"},
    }
    assert culler.route_activity(routes) == {
        ("a", ""): datetime(2026, 1, 1, 10), ("a", "gpu"): datetime(2026, 1, 1, 10)}


class _Servers:
    """What the culler asks of the server manager, for a test without processes."""

    def __init__(self, running: list[str]) -> None:
        self.running = running
        self.stopped: list[str] = []

    def wanted_routes(self) -> dict[str, Any]:
        from hub.services.proxy_client import Route

        return {f"/user/{n}": Route("http://127.0.0.1:1", {"user": n, "server_name": ""})
                for n in self.running}

    async def stop(self, user: str, server: str = "") -> bool:
        self.stopped.append(user)
        self.running.remove(user)
        return True

    def state(self, user: str, server: str = "") -> Any:
        from hub.services.lifecycle import State

        return State.RUNNING if user in self.running else State.STOPPED


async def test_unreachable_proxy_leaves_reported_activity(tmp_path: Any) -> None:
    """Without the proxy's table the check uses what servers reported; cull_users removes
    the idle owner."""
    from typing import cast

    from hub.db.database import make_engine, make_sessionmaker, transaction, upgrade
    from hub.db.models import Server, User, utcnow
    from hub.services.proxy_client import ProxyClient
    from hub.services.servers import ServerManager

    engine = make_engine(f"sqlite:///{tmp_path}/hub.sqlite")
    upgrade(engine, backup=False)
    db = make_sessionmaker(engine)
    now = utcnow()
    with transaction(db) as session:
        for name, idle in (("old", timedelta(hours=2)), ("new", timedelta(minutes=1))):
            session.add(Server(user=User(name=name), name="", lifecycle="running",
                               started=now - timedelta(hours=3), last_activity=now - idle))
    with socket_closed() as port:
        proxy = ProxyClient(f"http://127.0.0.1:{port}", "token", timeout=2)
        servers = _Servers(["old", "new"])
        cull = culler.Culler(_cfg(cull_idle_timeout=3600.0, cull_users=True), db,
                             cast(ServerManager, servers), proxy)
        decisions = await cull.cull_once()
    assert [(d.user, d.reason) for d in decisions] == [("old", "idle")]
    assert servers.stopped == ["old"]
    with transaction(db) as session:
        assert [u.name for u in session.query(User)] == ["new"]
    engine.dispose()
