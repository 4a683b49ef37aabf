"""Run a real hub (and, through it, a real proxy) as processes on ephemeral loopback ports.

Used by the ``hub`` fixtures in ``tests/conftest.py``. Teardown stops everything the hub
started too — the proxy and user servers deliberately outlive the hub, so the fixture finds
them by the PIDs the hub recorded (``proxy.json`` and the servers' saved state).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

VENV_BIN = Path(sys.executable).parent
LISTEN_RE = re.compile(r"himalia: hub listening on (\S+), public URL (\S+)")
DEFAULT_BASE = "/my hub@x/"


class HubProcess:
    """A hub process with helpers to call its API and log users in."""

    def __init__(self, data_dir: Path, base_url: str = DEFAULT_BASE,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.base_path = quote(base_url, safe="/@")
        self.extra_args = extra_args or []
        self.extra_env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.hub_url = ""
        self.public = ""
        self._admin_token: str | None = None
        self.raw_base = base_url

    # --- process -----------------------------------------------------------------------
    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "hub", "--data-dir", str(self.data_dir),
            "--port", "0", "--hub-port", "0", "--proxy-api-port", "0",
            "--base-url", self.raw_base, "--log-level", "DEBUG",
            "--server-poll-interval", "1", "--proxy-check-interval", "2", "--accounts", "hub",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> HubProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIMALIA_")}
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(self.extra_env)
        self.lines = []
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(self.proc, ready), daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or not self.hub_url:
            self.stop()
            raise RuntimeError("hub did not start:\n" + "\n".join(self.lines[-60:]))
        return self

    def _read(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = LISTEN_RE.search(line)
            if m and not ready.is_set():
                self.hub_url, public = m.group(1), m.group(2)
                self.public = public[: -len(self.base_path)] if public.endswith(
                    self.base_path) else public
                ready.set()
        ready.set()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the hub process only (servers and proxy keep running, by design)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout and not self.proc.stdout.closed:
            self._reader.join(5)
            self.proc.stdout.close()

    def cleanup(self) -> None:
        """Stop the hub and everything it started (by recorded PID)."""
        self.stop()
        for pid in self.child_pids():
            _kill_group(pid)

    def child_pids(self) -> list[int]:
        pids: list[int] = []
        proxy = self.data_dir / "proxy.json"
        if proxy.exists():
            try:
                pids.append(int(json.loads(proxy.read_text())["pid"]))
            except (ValueError, KeyError):
                pass
        db = self.data_dir / "himalia.sqlite"
        if db.exists():
            with sqlite3.connect(db) as conn:
                for (state,) in conn.execute("SELECT state FROM servers"):
                    pid = (json.loads(state) if isinstance(state, str) else state or {}).get("pid")
                    if isinstance(pid, int):
                        pids.append(pid)
        return pids

    def log_text(self) -> str:
        return "\n".join(self.lines)

    # --- URLs and API ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Public base URL through the proxy, e.g. ``http://127.0.0.1:PORT/my%20hub@x/``."""
        return self.public + self.base_path

    @property
    def hub_api(self) -> str:
        return self.url + "hub/api"

    @property
    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token = self.make_token("admin")
        return self._admin_token

    def api(self, method: str, path: str, token: str | None = None, **kw: Any
            ) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        headers.setdefault("Authorization", f"token {token or self.admin_token}")
        return requests.request(method, self.hub_api + path, headers=headers, timeout=60, **kw)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``himalia <args>`` on this hub's database, with the hub's account settings (as an
        operator's shared config file would give both)."""
        return subprocess.run([sys.executable, "-m", "hub", *args, "--data-dir",
                               str(self.data_dir)], input=stdin, capture_output=True,
                              text=True, timeout=60,
                              env={**os.environ, **self.account_env(), **{
                                  k: v for k, v in self.extra_env.items()
                                  if k.startswith("HIMALIA_")}})

    def account_env(self) -> dict[str, str]:
        """``HIMALIA_ACCOUNTS`` (and the prefix) as the hub's flags set them."""
        argv = self.argv()
        env = {}
        for flag, var in (("--accounts", "HIMALIA_ACCOUNTS"),
                          ("--account-prefix", "HIMALIA_ACCOUNT_PREFIX")):
            if flag in argv:
                env[var] = argv[len(argv) - 1 - argv[::-1].index(flag) + 1]
        return env

    def make_token(self, user: str, *scopes: str) -> str:
        args = ["token", user]
        if scopes:
            args += ["--scopes", ",".join(scopes)]
        done = self.cli(*args)
        if done.returncode != 0:
            raise RuntimeError(f"himalia token failed: {done.stderr}")
        return done.stdout.strip()

    def new_user(self, prefix: str = "u", password: str = "correct horse 1",
                 admin: bool = False) -> tuple[str, str]:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        args = ["users", "add", name, "--password-stdin"] + (["--admin"] if admin else [])
        done = self.cli(*args, stdin=password + "\n")
        if done.returncode != 0:
            raise RuntimeError(f"himalia users add failed: {done.stderr}")
        return name, password

    def login(self, name: str, password: str) -> requests.Session:
        """A requests session logged in through the public login form."""
        s = requests.Session()
        page = s.get(self.url + "hub/login", timeout=30)
        page.raise_for_status()
        xsrf = s.cookies.get("_xsrf") or ""
        r = s.post(self.url + "hub/login", data={"username": name, "password": password,
                                                "_xsrf": xsrf}, timeout=30)
        if r.status_code >= 400 or "himalia-session" not in s.cookies:
            raise RuntimeError(f"login failed: {r.status_code}")
        return s

    def xsrf_for(self, session: requests.Session) -> str:
        """The session-bound XSRF token, read from the home page's meta tag."""
        text = session.get(self.url + "hub/home", timeout=30).text
        m = re.search(r'name="xsrf-token" content="([^"]+)"', text) or re.search(
            r'data-xsrf="([^"]+)"', text)
        if not m:
            raise RuntimeError("no xsrf token on the home page")
        return m.group(1)

    def wait_for(self, predicate: Any, timeout: float = 30.0, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met in {timeout}s")
            time.sleep(interval)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def running(data_dir: Path, **kw: Any) -> Iterator[HubProcess]:
    """Start a hub for a fixture and clean everything up afterwards."""
    hub = HubProcess(data_dir, **kw)
    try:
        yield hub.start()
    finally:
        hub.cleanup()
