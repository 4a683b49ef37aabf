"""The README's path, taken as a new user takes it: a clean environment, nothing on ``PATH``.

``make run`` starts ``.venv/bin/himalia --data-dir ./data`` from the operator's shell, whose
``PATH`` holds no venv. The hub must find its single-user command next to its own Python, run
the server as the user's own account (it runs as root: ``accounts = "auto"`` → ``create``), and
the browser flow log in → Start → JupyterLab must work. The same holds for a hub installed with
``pip install`` into any other venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import unixaccounts
from tests.hubproc import _kill_group

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("accounts-readme")]

REPO = Path(__file__).resolve().parents[1]
LISTEN_RE = re.compile(r"himalia: hub listening on (\S+), public URL (\S+)")
PASSWORD_RE = re.compile(r"username 'admin', password (\S+)")
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
             "TERM": "dumb"}


class ReadmeHub:
    """``<venv>/bin/himalia --data-dir DIR`` (the README's command) on ephemeral ports."""

    def __init__(self, himalia: Path, data_dir: Path) -> None:
        self.data_dir = data_dir
        argv = [str(himalia), "--data-dir", str(data_dir),
                "--port", "0", "--hub-port", "0", "--proxy-api-port", "0"]
        self.proc = subprocess.Popen(argv, env=CLEAN_ENV, cwd="/", stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.public = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(90) or not self.public:
            self.stop()
            raise RuntimeError("hub did not start:\n" + "\n".join(self.lines[-40:]))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if m := LISTEN_RE.search(line):
                self.public = m.group(2)
                self.ready.set()
        self.ready.set()

    @property
    def password(self) -> str:
        for line in self.lines:
            if m := PASSWORD_RE.search(line):
                return m.group(1)
        raise AssertionError("no first-admin password printed:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        # The proxy outlives the hub by design: stop it by the PID the hub recorded.
        record = self.data_dir / "proxy.json"
        if record.exists():
            _kill_group(int(json.loads(record.read_text())["pid"]))


def browser_flow(hub: ReadmeHub) -> str:
    """Log in as admin, press Start (as home.js does: jhapi POST with the XSRF token), open
    JupyterLab; returns the Lab page."""
    base = hub.public.rstrip("/") + "/"
    s = requests.Session()
    s.get(base + "hub/login", timeout=30).raise_for_status()
    r = s.post(base + "hub/login", data={"username": "admin", "password": hub.password,
                                         "_xsrf": s.cookies.get("_xsrf") or ""}, timeout=30)
    assert r.status_code == 200 and "himalia-session" in s.cookies, r.status_code
    home = s.get(base + "hub/home", timeout=30).text
    m = re.search(r'name="xsrf-token" content="([^"]+)"', home)
    assert m, "no XSRF token on the home page"
    start = s.post(base + "hub/api/users/admin/server", headers={"X-XSRFToken": m.group(1)},
                   timeout=60)
    assert start.status_code in (201, 202), start.text
    deadline = time.monotonic() + 120
    while True:
        model = s.get(base + "hub/api/users/admin", headers={"X-XSRFToken": m.group(1)},
                      timeout=30).json()
        server = model["servers"].get("")
        if server and server["ready"]:
            break
        assert time.monotonic() < deadline, f"server not ready: {model}\n" + \
            "\n".join(hub.lines[-30:])
        time.sleep(0.3)
    lab = s.get(base + "user/admin/lab", timeout=60)
    assert lab.status_code == 200, lab.status_code
    s.delete(base + "hub/api/users/admin/server", headers={"X-XSRFToken": m.group(1)},
             timeout=60)
    return lab.text


@pytest.fixture
def first_admin_account() -> Iterator[str]:
    """``jupyter-admin``, made by the hub on first spawn; removed after unless it was there."""
    unixaccounts.require_root()
    import pwd

    try:
        pwd.getpwnam("jupyter-admin")
        existed = True
    except KeyError:
        existed = False
    yield "jupyter-admin"
    if not existed:
        subprocess.run(["userdel", "--remove", "--force", "jupyter-admin"], capture_output=True)


def test_make_run_path_with_nothing_on_path(tmp_path: Path, first_admin_account: str) -> None:
    himalia = Path(sys.executable).with_name("himalia")
    hub = ReadmeHub(himalia, tmp_path / "data")
    try:
        lab = browser_flow(hub)
        assert "JupyterLab" in lab
        assert "each user's server runs as its own Unix account" in "\n".join(hub.lines)
    finally:
        hub.stop()


def test_hub_pip_installed_into_another_venv(tmp_path: Path, first_admin_account: str) -> None:
    """A hub ``pip install``-ed into a venv of its own finds that venv's himalia-singleuser."""
    world = unixaccounts.world_dir("himalia-venv-")
    try:
        venv = world / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        # The dependencies come from the test venv (a .pth), the project itself is installed
        # for real, scripts included, without reaching any package index.
        site = next(venv.glob("lib/python3*/site-packages"))
        deps = next(Path(sys.executable).parent.parent.glob("lib/python3*/site-packages"))
        (site / "himalia-deps.pth").write_text(str(deps) + "\n")
        build = world / "src"
        shutil.copytree(REPO, build, ignore=shutil.ignore_patterns(
            ".venv", ".git", "data", "*.egg-info", "build", "__pycache__"))
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--no-index", str(build)], check=True,
                       env={**CLEAN_ENV, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, timeout=300)
        assert (venv / "bin" / "himalia-singleuser").exists()
        hub = ReadmeHub(venv / "bin" / "himalia", tmp_path / "data")
        try:
            assert "JupyterLab" in browser_flow(hub)
        finally:
            hub.stop()
        assert os.path.exists(venv / "bin" / "himalia")
    finally:
        shutil.rmtree(world, ignore_errors=True)
