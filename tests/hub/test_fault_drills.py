"""Fault drills with the whole real stack, each asserting that nothing was lost (issue 11 §7).

Bounded in count and time, loopback only; every process is stopped by the PID we know.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.hub import mockserver
from tests.hubproc import HubProcess

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _start_all(hub: HubProcess, names: list[str]) -> dict[str, int]:
    """Start every user's server; their PIDs once all are ready."""
    for name in names:
        assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)

    def all_ready() -> dict[str, int] | None:
        pids = {}
        for name in names:
            server = hub.api("GET", f"/users/{name}").json()["servers"].get("")
            if not server or not server["ready"]:
                return None
            pids[name] = server["state"]["pid"]
        return pids

    pids: dict[str, int] = hub.wait_for(all_ready, timeout=120)
    return pids


def _reachable(hub: HubProcess, name: str) -> bool:
    r = requests.get(hub.url + f"user/{quote(name)}/api/status", timeout=10,
                     allow_redirects=False)
    return r.status_code < 500


def test_hub_killed_with_ten_servers_running(make_hub: Callable[..., HubProcess],
                                             tmp_path: Path) -> None:
    """``kill -9`` the hub: all ten servers stay reachable through the proxy while it is down,
    and after it returns they are the same processes, still routed."""
    cmd, args = mockserver.command("normal")
    config = tmp_path / "hub.toml"
    config.write_text(f"singleuser_cmd = {cmd!r}\nsingleuser_args = {args!r}\n".replace("'", '"'))
    hub = make_hub(data_dir=tmp_path / "data", extra_args=["--config", str(config)])
    names = [hub.new_user(f"k{i}")[0] for i in range(10)]
    pids = _start_all(hub, names)
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait(10)
    hub.stop()  # collects the dead hub's output pipe
    assert all(_reachable(hub, n) for n in names)  # the proxy serves them without the hub
    hub.start()
    for name in names:
        server = hub.api("GET", f"/users/{name}").json()["servers"][""]
        assert server["ready"] and server["state"]["pid"] == pids[name]
        assert _reachable(hub, name)


def test_sqlite_with_twenty_concurrent_writers(hub: HubProcess) -> None:
    """20 clients creating users, tokens and activity at once: no 5xx, nothing lost."""
    prefix = f"w{os.getpid()}x"

    def writer(i: int) -> list[int]:
        name = f"{prefix}{i}"
        codes = [hub.api("POST", f"/users/{name}").status_code]
        codes.append(hub.api("POST", f"/users/{name}/tokens", json={"note": "drill"})
                     .status_code)
        codes.append(hub.api("POST", f"/users/{name}/activity",
                             json={"last_activity": "2026-01-01T00:00:00Z"}).status_code)
        return codes

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(writer, range(20)))
    assert all(codes == [201, 201, 204] for codes in results), results
    listed = hub.api("GET", "/users", params={"name_filter": prefix}).json()
    assert len(listed) == 20
    for i in range(20):
        assert len(hub.api("GET", f"/users/{prefix}{i}/tokens").json()["api_tokens"]) == 1
    assert "database is locked" not in hub.log_text()


def test_login_and_spawn_burst(make_hub: Callable[..., HubProcess], tmp_path: Path) -> None:
    """200 logins and 50 spawns at once: 429 with Retry-After where the limits say so, no 5xx."""
    cmd, args = mockserver.command("slow", delay=1.0)
    config = tmp_path / "hub.toml"
    config.write_text(f"singleuser_cmd = {cmd!r}\nsingleuser_args = {args!r}\n".replace("'", '"'))
    hub = make_hub(data_dir=tmp_path / "data", extra_args=[
        "--config", str(config), "--concurrent-spawn-limit", "10"])
    users = [hub.new_user(f"b{i}") for i in range(50)]

    def login(i: int) -> int:
        name, password = users[i % len(users)]
        s = requests.Session()
        s.get(hub.url + "hub/login", timeout=60)
        wrong = "" if i % 2 else "x"  # half of them fail
        r = s.post(hub.url + "hub/login", data={"username": name, "password": password + wrong,
                                               "_xsrf": s.cookies.get("_xsrf") or ""},
                   allow_redirects=False, timeout=60)
        return r.status_code

    def spawn(i: int) -> tuple[int, str | None]:
        r = hub.api("POST", f"/users/{users[i][0]}/server")
        return r.status_code, r.headers.get("Retry-After")

    with ThreadPoolExecutor(20) as pool:
        logins = list(pool.map(login, range(200)))
        spawns = list(pool.map(spawn, range(50)))
    assert set(logins) <= {302, 403, 429}, sorted(set(logins))
    assert 302 in logins
    assert {code for code, _ in spawns} <= {201, 202, 429}
    refused = [after for code, after in spawns if code == 429]
    assert refused and all(after and int(after) > 0 for after in refused)
    assert sum(1 for code, _ in spawns if code in (201, 202)) >= 10
    started = [users[i][0] for i, (code, _) in enumerate(spawns) if code in (201, 202)]
    for name in started:
        hub.api("DELETE", f"/users/{name}/server")


# --- PostgreSQL outage -----------------------------------------------------------------------
@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A PostgreSQL server of this test's own (others' tests keep theirs): url, dir, port."""
    if os.geteuid() != 0:
        pytest.skip("starting PostgreSQL needs root")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    pg_dir = Path("/tmp") / f"himalia-drill-pg-{os.getpid()}"
    env = {**os.environ, "PG_PORT": port, "PG_DIR": str(pg_dir)}
    up = subprocess.run(["bash", str(REPO / "scripts" / "pg_up.sh")], env=env,
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield up.stdout.strip().splitlines()[-1], pg_dir, port
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "pg_down.sh")],
                       env={**env, "PG_WIPE": "1"}, capture_output=True, timeout=60)


def _pg(script: str, pg_dir: Path, port: str) -> None:
    """Run the project's ``pg_up.sh`` or ``pg_down.sh`` on this test's server."""
    env = {**os.environ, "PG_PORT": port, "PG_DIR": str(pg_dir)}
    done = subprocess.run(["bash", str(REPO / "scripts" / script)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_postgres_outage_under_api_load(make_hub: Callable[..., HubProcess],
                                        own_postgres: tuple[str, Path, str]) -> None:
    """PostgreSQL stopped for 10 s while clients create users: JSON 503s meanwhile, full
    recovery after, and every user the API said it created exists (none half-written)."""
    url, pg_dir, port = own_postgres
    hub = make_hub(env={"HIMALIA_DB_URL": url})
    assert hub.admin_token  # minted now: the CLI needs the database too
    created: list[str] = []
    statuses: list[int] = []
    bad: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            name = f"pg{worker}n{i}"
            i += 1
            try:
                r = hub.api("POST", f"/users/{name}")
            except requests.RequestException as e:
                bad.append(f"{name}: {e}")
                continue
            statuses.append(r.status_code)
            if r.status_code == 201:
                created.append(name)
            elif r.status_code >= 500:
                shaped = r.headers.get("Content-Type", "").startswith("application/json") \
                    and set(r.json()) == {"status", "message"}
                if not shaped or "Traceback" in r.text:
                    bad.append(f"{r.status_code} {r.text[:200]}")
            time.sleep(0.05)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        _pg("pg_down.sh", pg_dir, port)
        time.sleep(10)
        during = len(statuses)
        _pg("pg_up.sh", pg_dir, port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and statuses[-1:] != [201]:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not bad, "\n".join([*bad[:3], *hub.lines[-60:]])
    assert 503 in statuses[:during], sorted(set(statuses))
    assert statuses[-1] == 201, "\n".join(hub.lines[-40:])  # recovered without a restart
    listed: set[str] = set()
    while True:
        page = hub.api("GET", "/users", params={"limit": 200, "offset": len(listed),
                                                "name_filter": "pg"}).json()
        listed.update(u["name"] for u in page)
        if len(page) < 200:
            break
    assert set(created) <= listed
