"""Fixtures for the single-user server tests: a fake hub and real ``himalia-singleuser``
processes on ephemeral loopback ports, stopped by PID after use."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.singleuser.fakehub import FakeHub

#: Environment passed through from the test process (as the hub's allow-list would).
PASS_ENV = ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "PYTHONPATH", "LD_LIBRARY_PATH")
START_TIMEOUT = 30.0


def free_port() -> int:
    """An unused loopback TCP port (bound and released; fine for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SingleUser:
    """A running (or exited) ``himalia-singleuser`` process and what it was given."""

    proc: subprocess.Popen[bytes]
    hub: FakeHub
    port: int
    prefix: str
    user: str
    server_token: str
    client_id: str
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def direct_url(self) -> str:
        """The server's own URL (prefix included), bypassing the fake hub's proxy."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def public_url(self) -> str:
        """The server's URL through the fake hub's proxy (one origin with the hub)."""
        return f"{self.hub.url}{self.prefix}"

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL of its process group if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def singleuser_env(hub: FakeHub, home: Path, port: int, user: str, server_token: str,
                   **extra: str) -> dict[str, str]:
    """The JUPYTERHUB_* environment a hub would give ``user``'s default server."""
    prefix = f"{hub.base_path}user/{user}/"
    env = {k: v for k, v in os.environ.items() if k in PASS_ENV}
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
        JUPYTER_DATA_DIR=str(home / ".local/share/jupyter"),
        JUPYTER_RUNTIME_DIR=str(home / ".local/share/jupyter/runtime"),
        JUPYTERHUB_API_TOKEN=server_token,
        JUPYTERHUB_API_URL=hub.api_url,
        JUPYTERHUB_CLIENT_ID=f"jupyterhub-user-{user}",
        JUPYTERHUB_USER=user,
        JUPYTERHUB_SERVER_NAME="",
        JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}{prefix}",
        JUPYTERHUB_SERVICE_PREFIX=prefix,
        JUPYTERHUB_BASE_URL=hub.base_url,
        JUPYTERHUB_OAUTH_CALLBACK_URL=f"{prefix}oauth_callback",
        JUPYTERHUB_OAUTH_ACCESS_SCOPES=(
            f'["access:servers!server={user}/", "access:servers!user={user}"]'),
        JUPYTERHUB_ACTIVITY_URL=f"{hub.api_url}/users/{user}/activity",
        JUPYTERHUB_ACTIVITY_INTERVAL="0.5",
    )
    env.update(extra)
    return env


def wait_ready(server: SingleUser, timeout: float = START_TIMEOUT) -> float:
    """Poll ``GET <prefix>api`` until it answers < 500; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if requests.get(server.direct_url + "api", timeout=2).status_code < 500:
                return time.monotonic() - start
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server not ready after {timeout}s:\n{server.log()}")


Spawner = Callable[..., SingleUser]
Browser = Callable[[str | None], requests.Session]


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Factory of ``requests`` sessions acting as a browser logged in to the fake hub as the
    given user (or as nobody); all are closed after the test."""
    sessions: list[requests.Session] = []

    def make(user: str | None) -> requests.Session:
        session = requests.Session()
        if user:
            session.headers["X-Fakehub-User"] = user
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A fake hub on an ephemeral port, for one test."""
    with FakeHub() as hub:
        yield hub


def _spawner(tmp_dir: Path, started: list[SingleUser]) -> Spawner:
    def spawn(hub: FakeHub, user: str = "alice", wait: bool = True,
              args: tuple[str, ...] = (), config: str = "", **extra: str) -> SingleUser:
        """Start ``user``'s server with ``args``, a ``jupyter_server_config.py`` containing
        ``config`` and ``extra`` environment variables; wait until ready unless told not to."""
        home = tmp_dir / f"{user}-{len(started)}"
        (home / ".jupyter").mkdir(parents=True)
        if config:
            (home / ".jupyter" / "jupyter_server_config.py").write_text(config)
        port = free_port()
        server_token = hub.add_token(user, [f"users:activity!user={user}"], kind="server")
        env = singleuser_env(hub, home, port, user, server_token, **extra)
        hub.register_client(env["JUPYTERHUB_CLIENT_ID"], server_token,
                            env["JUPYTERHUB_OAUTH_CALLBACK_URL"])
        log_path = home / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "singleuser", *args], env=env, cwd=home,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        server = SingleUser(proc, hub, port, env["JUPYTERHUB_SERVICE_PREFIX"], user,
                            server_token, env["JUPYTERHUB_CLIENT_ID"], log_path, env)
        started.append(server)
        if wait:
            wait_ready(server)
            hub.target = f"http://127.0.0.1:{port}"
        return server

    return spawn


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    """Factory starting ``himalia-singleuser`` processes; all are stopped after the test."""
    started: list[SingleUser] = []
    yield _spawner(tmp_path, started)
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleUser]:
    """Alice's server behind a fake hub, shared by a module's tests (start-up costs ~1 s)."""
    started: list[SingleUser] = []
    with FakeHub() as hub:
        try:
            yield _spawner(tmp_path_factory.mktemp("alice"), started)(hub)
        finally:
            for server in started:
                server.stop()
