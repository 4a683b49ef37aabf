"""The Spawner contract, LocalProcessSpawner and process identity (pid + start time).

Real child processes (``tests/hub/mockserver.py``) on ephemeral ports; every process a test
starts is killed by PID at the end, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from hub.config import Config, load
from hub.services import procinfo
from hub.services.local_spawner import LOG_NAME, LocalProcessSpawner
from hub.services.server_names import (
    access_scopes,
    client_id,
    route_path,
    safe_dir_name,
    server_prefix,
    server_token_scopes,
    url_base,
)
from hub.services.spawner import Spawner
from tests.hub import mockserver

BASE = "/my hub@x/"
ODD = "zoë ice@x"  # space, @ and non-ASCII: escaping bugs show up here
CONTRACT_KEYS = {
    "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "JUPYTERHUB_CLIENT_ID", "JUPYTERHUB_API_URL",
    "JUPYTERHUB_ACTIVITY_URL", "JUPYTERHUB_BASE_URL", "JUPYTERHUB_SERVICE_PREFIX",
    "JUPYTERHUB_SERVICE_URL", "JUPYTERHUB_USER", "JUPYTERHUB_SERVER_NAME", "JUPYTERHUB_HOST",
    "JUPYTERHUB_OAUTH_CALLBACK_URL", "JUPYTERHUB_OAUTH_ACCESS_SCOPES", "JUPYTERHUB_OAUTH_SCOPES",
    "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES",
}


def make_config(tmp_path: Path, mode: str = "normal", **changes: Any) -> Config:
    cmd, args = mockserver.command(mode, delay=changes.pop("delay", 2.0))
    return load(environ={}).replace(
        data_dir=str(tmp_path / "data"), base_url=BASE, singleuser_cmd=cmd,
        singleuser_args=args, **{"accounts": "hub", **changes},
    )


def spawner_for(cfg: Config, user: str = "alice", server: str = "",
                cls: type[LocalProcessSpawner] = LocalProcessSpawner) -> LocalProcessSpawner:
    sp = cls(cfg, user, server, hub_api_url="http://127.0.0.1:8081" + url_base(cfg.base_url)
             + "hub/api")
    sp.api_token = "s3cret-server-token"
    return sp


async def wait_http(url: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _ = await asyncio.to_thread(mockserver.http_get, url, 2.0)
        if status:
            return status
        await asyncio.sleep(0.05)
    raise TimeoutError(url)


# --- the contract ----------------------------------------------------------------------------
def test_subclass_missing_a_method_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="poll, stop"):
        class Broken(Spawner):
            async def start(self) -> str:
                return "http://127.0.0.1:1"


def test_abstract_subclass_may_defer_methods() -> None:
    class Base(Spawner, abstract=True):
        pass

    class Complete(Base):
        async def start(self) -> str:
            return "http://127.0.0.1:1"

        async def poll(self) -> int | None:
            return 0

        async def stop(self, now: bool = False) -> None:
            return None

    assert Complete.REQUIRED == ("start", "poll", "stop")


def test_names_are_escaped_and_unique_per_user_and_server() -> None:
    assert url_base("/my hub@x") == "/my%20hub@x/"
    assert url_base("/my%20hub@x/") == "/my%20hub@x/"
    assert url_base("/") == "/"
    assert server_prefix(BASE, ODD) == "/my%20hub@x/user/zo%C3%AB%20ice@x/"
    assert server_prefix(BASE, "alice", "gpu") == "/my%20hub@x/user/alice/gpu/"
    assert route_path(BASE, "alice", "gpu") == "/my%20hub@x/user/alice/gpu"
    assert client_id("alice") == "jupyterhub-user-alice"
    assert client_id("alice", "gpu") == "jupyterhub-user-alice-gpu"
    # user "a" + server "b" must not collide with user "a-b"'s default server
    assert client_id("a", "b") != client_id("a-b")
    pairs = [("a", "b"), ("a-b", ""), ("a~b", ""), ("a_b", ""), ("A/b", ""), ("a b", "")]
    assert len({safe_dir_name(u, s) for u, s in pairs}) == len(pairs)
    assert all("/" not in safe_dir_name(u, s) for u, s in pairs)
    assert not safe_dir_name(".hidden").startswith(".")
    assert access_scopes("alice") == ["access:servers!server=alice/",
                                      "access:servers!user=alice"]
    assert server_token_scopes("alice", "gpu") == ["access:servers!server=alice/gpu",
                                                    "users:activity!user=alice"]


def test_env_is_exactly_the_contract_and_no_secret(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "proxy-secret")
    monkeypatch.setenv("HIMALIA_COOKIE_SECRET", "cookie-secret")
    monkeypatch.setenv("HIMALIA_DB_URL", "postgresql://u:pw@db/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    monkeypatch.setenv("CONDA_PREFIX", "/opt/conda")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    cfg = make_config(tmp_path, admin_access=True, default_url="/tree", root_dir="/srv/nb")
    sp = spawner_for(cfg, ODD, "gpu")
    env = sp.get_env(5555)
    allowed = {k for k in os.environ if k in ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV",
                                               "PYTHONPATH", "LD_LIBRARY_PATH")
               or k.startswith("CONDA_")}
    extra = {"JUPYTERHUB_ADMIN_ACCESS", "JUPYTERHUB_DEFAULT_URL", "JUPYTERHUB_ROOT_DIR"}
    assert set(env) == CONTRACT_KEYS | extra | allowed | {"USER", "LOGNAME", "HOME", "SHELL"}
    assert not {v for v in env.values() if "secret" in v and v != sp.api_token}
    prefix = "/my%20hub@x/user/zo%C3%AB%20ice@x/gpu/"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == prefix
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:5555" + prefix
    assert env["JUPYTERHUB_API_URL"] == "http://127.0.0.1:8081/my%20hub@x/hub/api"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == (
        "http://127.0.0.1:8081/my%20hub@x/hub/api/users/zo%C3%AB%20ice@x/activity")
    assert env["JUPYTERHUB_BASE_URL"] == "/my%20hub@x/"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == prefix + "oauth_callback"
    assert env["JUPYTERHUB_CLIENT_ID"] == "jupyterhub-user-zo%C3%AB%20ice@x-gpu"
    assert env["JUPYTERHUB_USER"] == ODD and env["JUPYTERHUB_SERVER_NAME"] == "gpu"
    assert env["JUPYTERHUB_HOST"] == ""
    assert env["JPY_API_TOKEN"] == env["JUPYTERHUB_API_TOKEN"] == sp.api_token
    assert json.loads(env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]) == [
        f"access:servers!server={ODD}/gpu", f"access:servers!user={ODD}"]
    assert env["JUPYTERHUB_OAUTH_SCOPES"] == env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"]
    assert env["JUPYTERHUB_ADMIN_ACCESS"] == "1"
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/tree"
    assert env["CONDA_PREFIX"] == "/opt/conda"
    plain = spawner_for(make_config(tmp_path), "bob").get_env(5555)
    assert set(plain) == CONTRACT_KEYS | allowed | {"USER", "LOGNAME", "HOME", "SHELL"}


# --- LocalProcessSpawner -----------------------------------------------------------------
async def test_start_poll_stop_with_the_exact_env(tmp_path: Path, pids: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "proxy-secret")
    monkeypatch.setenv("HIMALIA_COOKIE_SECRET", "cookie-secret")
    monkeypatch.setenv("LANG", "C.UTF-8")  # no locale coercion adding LC_CTYPE in the child
    monkeypatch.delenv("LC_ALL", raising=False)
    sp = spawner_for(make_config(tmp_path), ODD)
    target = await sp.start()
    assert sp.pid is not None
    pids.append(sp.pid)
    assert target == f"http://127.0.0.1:{sp.port}"
    assert await wait_http(target + sp.prefix + "api") == 200
    assert await sp.poll() is None
    status, body = await asyncio.to_thread(mockserver.http_get, target + sp.prefix + "env")
    assert status == 200
    child_env = json.loads(body)
    assert child_env == sp.get_env(sp.port or 0)
    # its own session (survives the hub), its own dir, output in a private log file there
    assert os.getsid(sp.pid) == sp.pid
    cwd = Path(os.readlink(f"/proc/{sp.pid}/cwd"))
    assert cwd == sp.work_dir() and cwd.parent == sp.config.data_path / "users"
    assert (cwd / LOG_NAME).stat().st_mode & 0o077 == 0
    state = sp.get_state()
    assert state == {"pid": sp.pid, "start_time": procinfo.start_time(sp.pid), "port": sp.port,
                     "uid": os.getuid(), "boot_id": procinfo.boot_id()}
    await sp.stop()
    assert await sp.poll() is not None
    assert not mockserver.pid_alive(sp.pid)
    await sp.stop()  # again: harmless


async def test_crash_at_start_is_polled_with_its_status(tmp_path: Path, pids: list[int]) -> None:
    sp = spawner_for(make_config(tmp_path, "crash"))
    await sp.start()
    assert sp.pid
    pids.append(sp.pid)
    for _ in range(200):
        if await sp.poll() is not None:
            break
        await asyncio.sleep(0.02)
    assert await sp.poll() == 3
    assert "mode crash" in (sp.work_dir() / LOG_NAME).read_text()


async def test_stop_escalates_to_sigkill(tmp_path: Path, pids: list[int]) -> None:
    sp = spawner_for(make_config(tmp_path, "ignore-term"))
    sp.term_timeout = 0.5
    target = await sp.start()
    assert sp.pid
    pids.append(sp.pid)
    await wait_http(target + sp.prefix + "api")
    began = time.monotonic()
    await sp.stop()
    assert time.monotonic() - began < 4
    assert not mockserver.pid_alive(sp.pid)
    assert await sp.poll() == -9


async def test_server_survives_its_parent_and_is_reattached(tmp_path: Path,
                                                            pids: list[int]) -> None:
    cfg = make_config(tmp_path)
    # A "hub" process that starts the server and exits at once.
    script = textwrap.dedent("""
        import asyncio, json, sys
        from hub.config import load
        from hub.services.local_spawner import LocalProcessSpawner
        changes = json.loads(sys.argv[1])
        cfg = load(environ={}).replace(**changes)
        sp = LocalProcessSpawner(cfg, "alice", hub_api_url="http://127.0.0.1:1/hub/api")
        sp.api_token = "t"
        asyncio.run(sp.start())
        print(json.dumps(sp.get_state()))
    """)
    changes = {"data_dir": cfg.data_dir, "base_url": BASE, "singleuser_cmd": cfg.singleuser_cmd,
               "singleuser_args": cfg.singleuser_args}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(changes)], check=True,
                          capture_output=True, text=True, timeout=30)
    state = json.loads(done.stdout)
    pids.append(state["pid"])
    sp = spawner_for(cfg)
    sp.load_state(state)
    assert sp.proc is None  # not our child: polled through /proc
    assert await sp.poll() is None
    assert await wait_http(f"http://127.0.0.1:{state['port']}{sp.prefix}api") == 200
    await sp.stop()
    assert await sp.poll() == 1
    assert not mockserver.pid_alive(state["pid"])


async def test_recycled_pid_is_never_the_server(tmp_path: Path, pids: list[int]) -> None:
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    pids.append(other.pid)
    real = procinfo.start_time(other.pid)
    assert real is not None
    sp = spawner_for(make_config(tmp_path))
    boot = procinfo.boot_id()
    sp.load_state({"pid": other.pid, "start_time": real + 1, "port": 1, "boot_id": boot})
    assert await sp.poll() == 1
    await sp.stop()  # must not signal the unrelated process
    assert mockserver.pid_alive(other.pid)
    sp.load_state({"pid": other.pid, "port": 1, "boot_id": boot})  # no start time
    assert sp.pid is None and await sp.poll() == 0
    sp.load_state({"pid": other.pid, "start_time": real, "port": 1, "boot_id": "other-boot"})
    assert sp.pid is None  # start times of another boot mean nothing
    sp.load_state({"pid": other.pid, "start_time": real, "port": 1, "boot_id": boot})
    assert await sp.poll() is None  # the right identity is recognised
    other.kill()
    other.wait()


async def test_procinfo_zombie_counts_as_dead() -> None:
    child = subprocess.Popen(["true"])
    started = procinfo.start_time(child.pid)
    deadline = time.monotonic() + 5
    while (stat := procinfo.read_stat(child.pid)) and not stat.zombie:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert procinfo.matches(child.pid, started)
    assert not procinfo.is_alive(child.pid, started)
    assert procinfo.reap(child.pid) == 0
    assert procinfo.read_stat(child.pid) is None
    child.wait()
    me = procinfo.read_stat(os.getpid())
    assert me is not None and me.state in "RS" and not me.zombie
    assert procinfo.read_stat(0) is None


async def test_work_dirs_are_separate_per_server(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    dirs = {spawner_for(cfg, u, s).work_dir() for u, s in
            [("alice", ""), ("alice", "gpu"), ("alice-gpu", ""), (ODD, "")]}
    assert len(dirs) == 4
    assert all(d.parent == cfg.data_path / "users" for d in dirs)
