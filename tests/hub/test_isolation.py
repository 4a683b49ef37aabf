"""Users kept apart: servers as their own Unix accounts, tried from inside a real kernel.

One hub (run as root, ``accounts = "create"``) with real single-user servers for alice and bob.
From alice's kernel, code tries everything SECURITY.md lists a user might try against the hub
and against bob; each attempt must fail, and the tests assert on how it failed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.services import cgroups, procinfo
from tests import unixaccounts
from tests.hubproc import HubProcess
from tests.kernelclient import KernelClient

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("isolation")]

# Run as alice: every attempt is recorded as "ok" or the exception it raised.
ATTEMPTS = r'''
import json, os, signal, urllib.request, urllib.error
DATA, BOB_HOME, BOB_PID, BOB_PORT, BOB_PREFIX, HUB_PID = {args}
result = {{}}
def attempt(name, fn):
    try:
        value = fn()
        result[name] = "ok" if value is None else "ok: " + str(value)[:200]
    except Exception as e:
        result[name] = type(e).__name__ + ": " + str(e)[:200]
attempt("read cookie_secret", lambda: open(DATA + "/cookie_secret", "rb").read())
attempt("read database", lambda: open(DATA + "/himalia.sqlite", "rb").read(16))
attempt("read proxy.json", lambda: open(DATA + "/proxy.json").read())
attempt("list data dir", lambda: os.listdir(DATA))
attempt("write data dir", lambda: open(DATA + "/planted", "w").write("x"))
attempt("list bob's home", lambda: os.listdir(BOB_HOME))
attempt("read bob's notebook", lambda: open(BOB_HOME + "/secret.txt").read())
attempt("read bob's environ", lambda: open("/proc/%d/environ" % BOB_PID, "rb").read())
attempt("kill bob's server", lambda: os.kill(BOB_PID, signal.SIGKILL))
attempt("kill the hub", lambda: os.kill(HUB_PID, signal.SIGKILL))
def direct(path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s%s" % (BOB_PORT, BOB_PREFIX, path),
                                 method=method, data=b"{{}}" if method == "POST" else None)
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
            return "%d %s" % (r.status, r.read(300))
    except urllib.error.HTTPError as e:
        return "HTTP %d %s" % (e.code, e.headers.get("Location", ""))
for path, method in (("api/kernels", "GET"), ("api/kernels", "POST"), ("api/contents", "GET"),
                     ("api/terminals", "POST"), ("lab", "GET"), ("files/secret.txt", "GET")):
    attempt("direct %s %s" % (method, path), lambda: direct(path, method))
result["uid"] = os.getuid()
print(json.dumps(result))
'''

WHOAMI = r'''
import json, os, pwd
env = {k: v for k, v in os.environ.items()}
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                  "home": os.environ.get("HOME"), "user": os.environ.get("USER"),
                  "cwd": os.getcwd(), "umask": os.umask(0o077),
                  "env": sorted(env)}))
'''


def start_server(hub: HubProcess, name: str, timeout: float = 90.0) -> dict[str, Any]:
    """Start ``name``'s default server through the API; its (admin-visible) model when ready."""
    r = hub.api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text

    def ready() -> dict[str, Any] | None:
        model = hub.api("GET", f"/users/{name}").json()["servers"].get("")
        return model if model and model["ready"] else None

    model: dict[str, Any] = hub.wait_for(ready, timeout=timeout)
    return model


def server_url(hub: HubProcess, name: str) -> str:
    return hub.public + f"{hub.base_path}user/{name}/"


@pytest.fixture(scope="module")
def iso() -> Iterator[dict[str, Any]]:
    unixaccounts.require_root()
    prefix = unixaccounts.unique_prefix()
    world = unixaccounts.world_dir()
    hub = HubProcess(world / "data", extra_args=[
        "--accounts", "create", "--account-prefix", prefix])
    try:
        hub.start()
        for name in ("alice", "bob"):
            assert hub.api("POST", f"/users/{name}").status_code == 201
        models = {name: start_server(hub, name) for name in ("alice", "bob")}
        tokens = {name: hub.make_token(name) for name in ("alice", "bob")}
        yield {"hub": hub, "prefix": prefix, "models": models, "tokens": tokens,
               "data": world / "data"}
    finally:
        for name in ("alice", "bob"):
            if hub.proc is not None and hub.proc.poll() is None:
                hub.api("DELETE", f"/users/{name}/server")
        hub.cleanup()
        unixaccounts.remove_with_prefix(prefix)
        shutil.rmtree(world, ignore_errors=True)


def kernel(iso: dict[str, Any], name: str) -> KernelClient:
    return KernelClient(server_url(iso["hub"], name), iso["tokens"][name])


def test_each_server_runs_as_its_own_account(iso: dict[str, Any]) -> None:
    for name in ("alice", "bob"):
        acct = pwd.getpwnam(iso["prefix"] + name)
        seen = kernel(iso, name).run_json(WHOAMI)
        assert seen["uid"] == acct.pw_uid != 0
        assert seen["gid"] == acct.pw_gid
        assert 0 not in seen["groups"]
        assert seen["home"] == acct.pw_dir == seen["cwd"]
        assert seen["user"] == acct.pw_name
        assert seen["umask"] == 0o077
        assert not [k for k in seen["env"] if k.startswith(("HIMALIA_", "CONFIGPROXY"))]
        home = os.stat(acct.pw_dir)
        assert (home.st_uid, stat.S_IMODE(home.st_mode)) == (acct.pw_uid, 0o700)


def test_alice_cannot_touch_the_hub_or_bob(iso: dict[str, Any]) -> None:
    hub: HubProcess = iso["hub"]
    bob_acct = pwd.getpwnam(iso["prefix"] + "bob")
    bob_state = iso["models"]["bob"]["state"]
    # bob writes a notebook file through his own kernel (so with his umask).
    kernel(iso, "bob").execute("open('secret.txt', 'w').write('bob only')")
    assert Path(bob_acct.pw_dir, "secret.txt").read_text() == "bob only"
    assert hub.proc is not None
    args = (str(iso["data"]), bob_acct.pw_dir, bob_state["pid"], bob_state["port"],
            f"{hub.base_path}user/bob/", hub.proc.pid)
    result = kernel(iso, "alice").run_json(ATTEMPTS.format(args=repr(args)))

    assert result["uid"] == pwd.getpwnam(iso["prefix"] + "alice").pw_uid
    for what in ("read cookie_secret", "read database", "read proxy.json", "list data dir",
                 "write data dir", "list bob's home", "read bob's notebook",
                 "read bob's environ"):
        assert result[what].startswith("PermissionError"), (what, result[what])
    for what in ("kill bob's server", "kill the hub"):
        assert result[what].startswith("PermissionError: [Errno 1]"), (what, result[what])
    for what, outcome in result.items():
        if what.startswith("direct "):
            # Straight to bob's port, without bob's cookie or token: refused or sent to log in.
            assert outcome.startswith(("ok: HTTP 403", "ok: HTTP 302")), (what, outcome)
    assert not (iso["data"] / "planted").exists()
    # bob and the hub are alive and well.
    assert hub.proc.poll() is None
    assert hub.api("GET", "/users/bob").json()["servers"][""]["ready"]


def test_an_admin_token_does_not_reach_users_servers(iso: dict[str, Any]) -> None:
    """``admin_access`` is off (the default): an admin's API token is refused by alice's
    server, as an admin's browser is (SECURITY.md 5); alice's own token works."""
    import requests

    hub: HubProcess = iso["hub"]
    url = server_url(hub, "alice") + "api/contents"
    refused = requests.get(url, headers={"Authorization": f"token {hub.admin_token}"},
                           timeout=30, allow_redirects=False)
    assert refused.status_code == 403, refused.text[:200]
    mine = requests.get(url, headers={"Authorization": f"token {iso['tokens']['alice']}"},
                        timeout=30)
    assert mine.status_code == 200 and mine.json()["type"] == "directory"


def test_the_hubs_files_are_private(iso: dict[str, Any]) -> None:
    data: Path = iso["data"]
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for f in data.rglob("*"):
        mode = stat.S_IMODE(f.stat().st_mode)
        assert f.stat().st_uid == 0, f
        assert mode & 0o077 == 0, (f, oct(mode))


def test_server_log_belongs_to_its_owner(iso: dict[str, Any]) -> None:
    acct = pwd.getpwnam(iso["prefix"] + "alice")
    log = Path(acct.pw_dir, ".himalia", "logs", "server.log")
    st = log.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (acct.pw_uid, 0o600)
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert "Jupyter Server" in log.read_text()


def test_account_names_are_checked_when_users_are_created(iso: dict[str, Any]) -> None:
    hub: HubProcess = iso["hub"]
    for bad in ("x@example.org", "with space", "a" * 40, "ümlaut"):
        r = hub.api("POST", f"/users/{bad}")
        assert r.status_code == 400, (bad, r.text)
        body = r.json()
        assert body["status"] == 400 and "Unix account name" in body["message"]
    r = hub.api("POST", "/users", json={"usernames": ["fine-name", "not@fine"]})
    assert r.status_code == 400 and "not@fine" in r.json()["message"]
    assert hub.api("GET", "/users/fine-name").status_code == 404  # all or nothing
    assert hub.api("POST", "/users/carl").status_code == 201
    r = hub.api("PATCH", "/users/carl", json={"name": "carlos"})
    assert r.status_code == 400 and "cannot be renamed" in r.json()["message"]


def test_restarted_hub_reattaches_and_stops_other_uids(iso: dict[str, Any]) -> None:
    hub: HubProcess = iso["hub"]
    before = hub.api("GET", "/users/alice").json()["servers"][""]["state"]
    hub.stop()
    hub.start()
    after = hub.api("GET", "/users/alice").json()["servers"][""]
    assert after["ready"] and after["state"]["pid"] == before["pid"]
    assert kernel(iso, "alice").run_json("import os, json; print(json.dumps(os.getuid()))") \
        == before["uid"]
    assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
    hub.wait_for(lambda: hub.api("GET", "/users/alice").json()["servers"] == {})
    # Gone (a zombie of an init that reaps late counts as gone too).
    assert not procinfo.is_alive(before["pid"], before["start_time"])


def test_memory_hog_is_killed_and_reported(tmp_path: Path) -> None:
    unixaccounts.require_root()
    if not Path("/sys/fs/cgroup/memory").is_dir() and \
            not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        pytest.fail("no cgroup memory controller on this machine")
    prefix = unixaccounts.unique_prefix()
    world = unixaccounts.world_dir()
    hub = HubProcess(world / "data", extra_args=[
        "--accounts", "create", "--account-prefix", prefix, "--mem-limit", "300M",
        "--cpu-limit", "0.5"])
    try:
        hub.start()
        hog, password = hub.new_user("hog")
        model = start_server(hub, hog)
        groups = cgroups.Cgroups("/sys/fs/cgroup", cgroups.Limits(300 << 20, 0.5)).group(
            model["state"]["cgroup"])
        if groups.version == 1:
            memory, cpu = groups.dirs
            assert int((memory / "memory.limit_in_bytes").read_text()) == 300 << 20
            assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50_000
        else:
            assert int((groups.dirs[0] / "memory.max").read_text()) == 300 << 20
            assert (groups.dirs[0] / "cpu.max").read_text().split() == ["50000", "100000"]
        assert model["state"]["pid"] in groups.pids()
        group = groups.dirs[0]
        client = KernelClient(server_url(hub, hog), hub.make_token(hog))
        assert client.run_json("import json; print(json.dumps(1))") == 1
        died = client.execute("hog = b'x' * (800 << 20)\nprint('survived')", timeout=120)
        assert "survived" not in died.stdout
        assert died.status in ("dead", "restarting"), died
        assert groups.oom_kills() >= 1
        home = hub.login(hog, password).get(hub.url + "hub/home", timeout=30).text
        assert "went over its memory limit (300 MiB)" in home
        assert hub.api("DELETE", f"/users/{hog}/server").status_code in (202, 204)
        hub.wait_for(lambda: not group.exists(), timeout=30)
    finally:
        hub.cleanup()
        unixaccounts.remove_with_prefix(prefix)
        shutil.rmtree(world, ignore_errors=True)


def test_unenforceable_limits_refuse_to_start(tmp_path: Path) -> None:
    unixaccounts.require_root()
    hub = HubProcess(tmp_path / "data", extra_args=["--mem-limit", "256M",
                                                    "--cgroup-root", str(tmp_path / "none")])
    with pytest.raises(RuntimeError, match="cannot be enforced"):
        hub.start(timeout=30)
    hub.cleanup()


def test_existing_accounts_mode(tmp_path: Path) -> None:
    with unixaccounts.accounts("carol") as (prefix, [carol]):
        hub = HubProcess(tmp_path / "data", extra_args=["--accounts", "existing"])
        try:
            hub.start()
            assert hub.api("POST", f"/users/{carol.pw_name}").status_code == 201
            model = start_server(hub, carol.pw_name)
            assert model["state"]["uid"] == carol.pw_uid
            # A hub user without an account: a clear failure, no server.
            ghost = prefix + "ghost"
            assert hub.api("POST", f"/users/{ghost}").status_code == 201
            hub.api("POST", f"/users/{ghost}/server")
            events = hub.api("GET", f"/users/{ghost}/server/progress", stream=True)
            text = events.text
            assert "there is no Unix account" in text and '"failed": true' in text
            assert hub.api("DELETE", f"/users/{carol.pw_name}/server").status_code in (202, 204)
        finally:
            hub.cleanup()


def test_recycled_pid_of_another_owner_is_never_signalled() -> None:
    """A stored server identity whose PID now names another account's process (same start
    time, other uid): the hub treats the server as gone and signals nothing."""
    import asyncio

    from hub.config import Config
    from hub.services.local_spawner import LocalProcessSpawner

    with unixaccounts.accounts("dave") as (_prefix, [dave]):
        other = __import__("subprocess").Popen(
            ["setpriv", f"--reuid={dave.pw_uid}", f"--regid={dave.pw_gid}", "--clear-groups",
             "sleep", "60"])
        try:
            time.sleep(0.2)
            sp = LocalProcessSpawner(Config(), "alice", hub_api_url="http://127.0.0.1:1/hub/api")
            sp.load_state({"pid": other.pid, "start_time": procinfo.start_time(other.pid),
                           "uid": dave.pw_uid + 1, "boot_id": procinfo.boot_id(), "port": 1})
            assert asyncio.run(sp.poll()) == 1
            asyncio.run(sp.stop(now=True))
            assert other.poll() is None  # still running: never signalled
        finally:
            other.send_signal(signal.SIGKILL)
            other.wait()
