"""ProxyClient against the real proxy, and ProxyLauncher: launch, attach after a hub restart,
attach to an external proxy, restart after a crash, the periodic route check.

Every proxy runs on ephemeral ports and is killed by PID at the end of its test.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hub.config import Config, load
from hub.services import procinfo
from hub.services.proxy_client import (
    ProxyClient,
    ProxyError,
    ProxyLauncher,
    Route,
    route_key,
)
from hub.services.server_names import route_path
from tests.hub import mockserver

HUB = "http://127.0.0.1:1"


def test_route_keys_are_canonical() -> None:
    assert route_key("") == route_key("/") == "/"
    assert route_key("user/alice/") == "/user/alice"
    # decoded (CHP) and encoded (ours) spellings of one key compare equal
    assert route_key("/my hub@x/user/zoë") == route_key("/my%20hub@x/user/zo%c3%ab/") == \
        "/my%20hub@x/user/zo%C3%AB"
    assert route_key("/%7Euser") == "/~user"


@pytest.fixture
def real_proxy(tmp_path: Path) -> Iterator[mockserver.RealProxy]:
    proxy = mockserver.RealProxy(tmp_path / "proxy", secrets.token_hex(16)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def make_config(tmp_path: Path, **changes: Any) -> Config:
    values: dict[str, Any] = {"data_dir": str(tmp_path / "data"), "base_url": "/my hub@x/",
                              "port": 0, "proxy_api_port": 0, "proxy_check_interval": 0.1}
    return load(environ={}).replace(**{**values, **changes})


@pytest.fixture
async def launchers(pids: list[int]) -> AsyncIterator[list[ProxyLauncher]]:
    made: list[ProxyLauncher] = []
    yield made
    for launcher in made:
        if launcher.pid:
            pids.append(launcher.pid)
        await launcher.stop()


# --- ProxyClient ---------------------------------------------------------------------------
async def test_client_routes_round_trip(real_proxy: mockserver.RealProxy) -> None:
    client = ProxyClient(real_proxy.api_url, real_proxy.token)
    assert await client.ping()
    key = route_path("/my hub@x/", "zoë ice@x", "gpu")
    await client.add_route(key + "/", "http://127.0.0.1:5555",
                           {"user": "zoë ice@x", "server_name": "gpu", "jupyterhub": True})
    routes = await client.get_routes()
    assert routes[key]["target"] == "http://127.0.0.1:5555"
    assert routes[key]["user"] == "zoë ice@x" and routes[key]["jupyterhub"] is True
    assert "last_activity" in routes[key]
    one = await client.get_route(key)
    assert one is not None and one["server_name"] == "gpu"
    old = await client.get_routes(inactive_since=datetime.now() + timedelta(days=1))
    assert key in old
    await client.delete_route(key)
    await client.delete_route(key)  # already gone: fine
    assert await client.get_route(key) is None
    await client.add_route("/", HUB, {"hub": True})
    assert (await client.get_routes())["/"]["target"] == HUB
    assert "token" not in repr(client) and real_proxy.token not in repr(client)


async def test_client_errors_are_clear(real_proxy: mockserver.RealProxy) -> None:
    wrong = ProxyClient(real_proxy.api_url, "wrong-token")
    with pytest.raises(ProxyError, match="403"):
        await wrong.get_routes()
    assert not await wrong.ping()
    nowhere = ProxyClient("http://127.0.0.1:9", "t", timeout=2)
    with pytest.raises(ProxyError, match=r"proxy API POST .*refused"):
        await nowhere.add_route("/user/x", "http://127.0.0.1:1")


async def test_sync_routes_repairs_only_our_routes(real_proxy: mockserver.RealProxy) -> None:
    client = ProxyClient(real_proxy.api_url, real_proxy.token)
    await client.add_route("/user/stale", "http://127.0.0.1:2", {"jupyterhub": True})
    await client.add_route("/foreign", "http://127.0.0.1:3", {"owner": "someone else"})
    await client.add_route("/user/moved", "http://127.0.0.1:4", {"jupyterhub": True})
    wanted = {
        "/": Route(HUB, {"hub": True, "jupyterhub": True}),
        "/user/new": Route("http://127.0.0.1:5", {"user": "new", "jupyterhub": True}),
        "/user/moved": Route("http://127.0.0.1:6", {"jupyterhub": True}),
    }
    sync = await client.sync_routes(wanted)
    assert sorted(sync.added) == ["/", "/user/moved", "/user/new"]
    assert sync.removed == ["/user/stale"]
    routes = await client.get_routes()
    assert set(routes) == {"/", "/user/new", "/user/moved", "/foreign"}
    assert routes["/user/moved"]["target"] == "http://127.0.0.1:6"
    again = await client.sync_routes(wanted)
    assert again.added == [] and again.removed == []


# --- ProxyLauncher -------------------------------------------------------------------------
async def test_launch_records_the_proxy_privately(tmp_path: Path,
                                                  launchers: list[ProxyLauncher]) -> None:
    environ = {**os.environ, "HIMALIA_COOKIE_SECRET": "cookie-secret",
               "CONFIGPROXY_AUTH_TOKEN": "not-this-one"}
    launcher = ProxyLauncher(make_config(tmp_path), HUB, environ=environ)
    launchers.append(launcher)
    client = await launcher.start()
    assert launcher.owned and launcher.pid and launcher.public_url and launcher.api_url
    record_path = tmp_path / "data" / "proxy.json"
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600
    record = json.loads(record_path.read_text())
    assert record["pid"] == launcher.pid
    assert record["start_time"] == procinfo.start_time(launcher.pid)
    assert record["api_url"] == launcher.api_url and record["public_url"] == launcher.public_url
    token = record["token"]
    assert len(token) >= 32 and token != "not-this-one"
    cmdline = Path(f"/proc/{launcher.pid}/cmdline").read_bytes()
    assert token.encode() not in cmdline
    proc_env = Path(f"/proc/{launcher.pid}/environ").read_bytes().split(b"\0")
    assert f"CONFIGPROXY_AUTH_TOKEN={token}".encode() in proc_env
    assert not [v for v in proc_env if v.startswith(b"HIMALIA_")]
    routes = await client.get_routes()
    assert routes["/"]["target"] == HUB and routes["/"]["hub"] is True
    # the actual ports were parsed from the proxy's listening line (port 0 was asked)
    status, _ = await asyncio.to_thread(mockserver.http_get, launcher.public_url + "/")
    assert status in (502, 503)  # routed to the (absent) hub
    await launcher.stop()
    assert not mockserver.pid_alive(record["pid"])
    assert "pid" not in json.loads(record_path.read_text())


async def test_hub_restart_attaches_to_the_running_proxy(tmp_path: Path,
                                                         launchers: list[ProxyLauncher]) -> None:
    cfg = make_config(tmp_path)
    first = ProxyLauncher(cfg, HUB)
    launchers.append(first)
    await first.start()
    assert first.client is not None
    await first.client.add_route("/user/alice", "http://127.0.0.1:7", {"jupyterhub": True})
    # The hub restarts, on another internal port.
    second = ProxyLauncher(cfg, lambda: "http://127.0.0.1:2")
    launchers.append(second)
    client = await second.start()
    assert second.pid == first.pid and second.api_url == first.api_url
    routes = await client.get_routes()
    assert routes["/"]["target"] == "http://127.0.0.1:2"
    assert routes["/user/alice"]["target"] == "http://127.0.0.1:7"


async def test_dead_recorded_proxy_is_replaced_with_the_same_token(
        tmp_path: Path, launchers: list[ProxyLauncher]) -> None:
    cfg = make_config(tmp_path)
    first = ProxyLauncher(cfg, HUB)
    launchers.append(first)
    await first.start()
    token = json.loads((tmp_path / "data" / "proxy.json").read_text())["token"]
    assert first.pid
    mockserver.kill_pid(first.pid)
    assert not first.alive()
    second = ProxyLauncher(cfg, HUB)
    launchers.append(second)
    await second.start()
    assert second.pid != first.pid
    assert json.loads((tmp_path / "data" / "proxy.json").read_text())["token"] == token


async def test_check_loop_restarts_a_killed_proxy_and_restores_routes(
        tmp_path: Path, launchers: list[ProxyLauncher]) -> None:
    # A long full-check interval: the restart must come from the liveness check.
    launcher = ProxyLauncher(make_config(tmp_path, proxy_check_interval=60.0), HUB)
    launcher.liveness_interval = 0.1
    launchers.append(launcher)
    client = await launcher.start()
    wanted = {"/user/bob": Route("http://127.0.0.1:8", {"user": "bob", "jupyterhub": True})}
    loop = asyncio.ensure_future(launcher.check_loop(lambda: wanted))
    try:
        old_pid, api_url = launcher.pid, launcher.api_url
        assert old_pid
        mockserver.kill_pid(old_pid)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if launcher.pid != old_pid and "/user/bob" in (await _routes(client)):
                break
        routes = await client.get_routes()
        assert launcher.pid != old_pid and launcher.api_url == api_url  # same ports
        assert routes["/user/bob"]["target"] == "http://127.0.0.1:8"
        assert routes["/"]["target"] == HUB
    finally:
        loop.cancel()


async def _routes(client: ProxyClient) -> dict[str, Any]:
    try:
        return await client.get_routes()
    except ProxyError:
        return {}


async def test_attach_to_an_external_proxy(tmp_path: Path,
                                           real_proxy: mockserver.RealProxy) -> None:
    cfg = make_config(tmp_path, proxy_api_url=real_proxy.api_url)
    launcher = ProxyLauncher(cfg, HUB, environ={"CONFIGPROXY_AUTH_TOKEN": real_proxy.token})
    client = await launcher.start()
    assert not launcher.owned
    assert (await client.get_routes())["/"]["target"] == HUB
    assert not await launcher.ensure_running()  # not ours: never restarted by us
    await launcher.stop()  # and never stopped by us
    assert real_proxy.pid and mockserver.pid_alive(real_proxy.pid)
    with pytest.raises(ProxyError, match="CONFIGPROXY_AUTH_TOKEN"):
        await ProxyLauncher(cfg, HUB, environ={}).start()
    with pytest.raises(ProxyError, match="does not answer"):
        await ProxyLauncher(cfg, HUB, environ={"CONFIGPROXY_AUTH_TOKEN": "wrong"}).start()
    assert not (tmp_path / "data" / "proxy.json").exists()
