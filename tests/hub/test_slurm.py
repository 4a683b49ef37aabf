"""The ``slurm`` spawner on a real Slurm (``scripts/slurm_up.sh``; CI starts it as root).

One hub (root, ``accounts = "create"``, ``spawner = "slurm"``) for the module. Each test makes
its own users, so their jobs and accounts do not meet. What is tried: a job as the user's own
account end to end through the proxy (JupyterLab answers, a kernel runs a cell, the API shows
the walltime); a queued job (the node filled by another job first) whose progress shows the
queue state and reason, cancelled from pending, and one that starts once the node frees;
``scancel`` from outside; ``slurmctld`` stopped for a few polls; the hub killed and restarted with
a running and a queued job; a 1-minute walltime that runs out and is reported.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import unixaccounts
from tests.hubproc import HubProcess
from tests.kernelclient import KernelClient

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

CTLD_PID = Path("/run/slurm/slurmctld.pid")
#: Profiles of the module's hub: "standard" for everyone, "staff" for the group hpc-staff.
PROFILES = """
[[profiles]]
name = "standard"
display_name = "Standard"
description = "1 CPU; walltime up to 2 hours"
[profiles.options]
cpus = 1
[profiles.choices.walltime]
minimum = 1
maximum = 120
default = 30
[profiles.choices.partition]
enum = ["debug"]

[[profiles]]
name = "staff"
display_name = "Staff"
groups = ["hpc-staff"]
[profiles.options]
partition = "debug"
[profiles.choices.walltime]
maximum = 600
default = 60
"""
PASSWORD = "correct horse 1"


def _slurm_up() -> bool:
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and any(s.startswith(("idle", "mixed", "alloc"))
                                        for s in done.stdout.split())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def squeue(job_id: str, fmt: str = "%T") -> str:
    done = subprocess.run(["squeue", "-h", "--states=all", "-j", job_id, "-o", fmt],
                          capture_output=True, text=True, timeout=20)
    return done.stdout.strip()


def submit_filler() -> list[str]:
    """Root jobs that take every slot of the node (``OverSubscribe=FORCE:4`` lets 4 jobs share
    a CPU, and ``--exclusive`` is ignored there), so that the next job queues; the caller
    cancels them."""
    jobs = []
    for _ in range(int(os.environ.get("SLURM_OVERSUBSCRIBE", "4"))):
        done = subprocess.run(["sbatch", "--parsable", f"--cpus-per-task={os.cpu_count()}",
                               "--job-name=filler", "--output=/dev/null", "--time=10"],
                              input="#!/bin/sh\nsleep 600\n", capture_output=True, text=True,
                              timeout=30, check=True)
        jobs.append(done.stdout.strip().split(";")[0])
    deadline = time.monotonic() + 30
    while squeue(jobs[0]) != "RUNNING":
        assert time.monotonic() < deadline, squeue(jobs[0])
        time.sleep(0.1)
    return jobs


def scancel(*job_ids: str) -> None:
    subprocess.run(["scancel", *job_ids], check=False, timeout=30)


def require_slurm() -> None:
    """Skip unless root and the test setup's Slurm is up (in CI: fail, it must be)."""
    unixaccounts.require_root()
    if not _slurm_up():
        if os.environ.get("CI") == "true":
            pytest.fail("Slurm is not running (scripts/test-setup.sh starts it)")
        pytest.skip("Slurm is not running (bash scripts/slurm_up.sh)")


def make_slurm_hub(world: Path, profiles: str, prefix: str, *extra: str) -> HubProcess:
    """A (not yet started) hub spawning Slurm jobs as accounts ``<prefix><name>``.

    The hub port is fixed (free now) for the hub's life: jobs report to it across restarts.
    """
    config = world / "himalia.toml"
    config.write_text(profiles)
    return HubProcess(world / "data", extra_args=[
        "--config", str(config), "--hub-port", str(free_port()), "--accounts", "create",
        "--account-prefix", prefix, "--spawner", "slurm", "--slurm-bind-ip", "127.0.0.1",
        *extra])


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    require_slurm()
    prefix = unixaccounts.unique_prefix()
    world = unixaccounts.world_dir()
    hub = make_slurm_hub(world, PROFILES, prefix,
                    "--slurm-walltime-warning", "3600", "--spawn-http-timeout", "60")
    fillers: list[str] = []
    try:
        hub.start()
        yield {"hub": hub, "prefix": prefix, "fillers": fillers, "world": world}
    finally:
        for job in fillers:
            scancel(job)
        if hub.proc is not None and hub.proc.poll() is None:
            users = hub.api("GET", "/users").json()
            for user in users:
                if user["servers"]:
                    hub.api("DELETE", f"/users/{user['name']}/server")
        hub.cleanup()
        _cancel_jobs_of(prefix)
        unixaccounts.remove_with_prefix(prefix)
        shutil.rmtree(world, ignore_errors=True)


def _cancel_jobs_of(prefix: str) -> None:
    done = subprocess.run(["squeue", "-h", "-o", "%i %u"], capture_output=True, text=True,
                          timeout=20)
    for line in done.stdout.splitlines():
        job, _, owner = line.partition(" ")
        if owner.startswith(prefix):
            scancel(job)


def new_user(hub: HubProcess) -> str:
    name, _ = hub.new_user("s", PASSWORD)
    return name


def job_of(hub: HubProcess, name: str) -> str:
    model = hub.api("GET", f"/users/{name}").json()["servers"][""]
    job: str = model["state"]["job_id"]
    return job


def wait_ready(hub: HubProcess, name: str, timeout: float = 90.0) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        model = hub.api("GET", f"/users/{name}").json()["servers"].get("")
        return model if model and model["ready"] else None

    try:
        found: dict[str, Any] = hub.wait_for(ready, timeout=timeout)
    except TimeoutError:
        log = "\n".join(line for line in hub.log_text().splitlines()
                        if "hub.access" not in line and "[D " not in line)
        raise AssertionError(f"{name}'s server not ready; hub log:\n{log[-5000:]}") from None
    return found


def wait_stopped(hub: HubProcess, name: str, timeout: float = 30.0) -> None:
    hub.wait_for(lambda: not hub.api("GET", f"/users/{name}").json()["servers"],
                 timeout=timeout)


def home_text(hub: HubProcess, name: str) -> str:
    session = hub.login(name, PASSWORD)
    r = session.get(hub.url + "hub/home", timeout=30)
    assert r.status_code == 200
    return r.text


def progress_until(hub: HubProcess, name: str, wanted: str, timeout: float = 30.0
                   ) -> list[dict[str, Any]]:
    """Progress events of ``name``'s start until one whose message contains ``wanted``."""
    events: list[dict[str, Any]] = []
    with requests.get(hub.hub_api + f"/users/{name}/server/progress", stream=True,
                      headers={"Authorization": f"token {hub.admin_token}"},
                      timeout=timeout) as r:
        for raw in r.iter_lines():
            line = raw.decode()
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line[6:]))
            if wanted in events[-1].get("message", "") or events[-1].get("failed") or \
                    events[-1].get("ready"):
                break
    return events


def test_job_runs_as_the_account_through_the_proxy(cluster: dict[str, Any]) -> None:
    hub: HubProcess = cluster["hub"]
    name = new_user(hub)
    assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)
    model = wait_ready(hub, name)
    job = model["state"]["job_id"]
    account = cluster["prefix"] + name
    assert squeue(job, "%u %T") == f"{account} RUNNING"
    assert model["user_options"] == {"profile": "standard", "cpus": 1, "walltime": 30,
                                     "partition": "debug"}
    wall = model["walltime"]
    assert wall["limit"] == "0:30:00" and 0 < wall["seconds_left"] <= 1800
    assert wall["warning"] is True  # slurm_walltime_warning (1 h) is longer than the job
    token = hub.make_token(name)
    url = hub.public + f"{hub.base_path}user/{name}/"
    lab = requests.get(url + "lab", headers={"Authorization": f"token {token}"}, timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    out = KernelClient(url, token).run_json(
        "import json, os; print(json.dumps({'uid': os.getuid(), "
        "'job': os.environ.get('SLURM_JOB_ID')}))")
    assert out == {"uid": pwd.getpwnam(account).pw_uid, "job": job}
    assert "runs out at" in home_text(hub, name)
    assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
    wait_stopped(hub, name)
    assert squeue(job) in ("", "CANCELLED", "COMPLETED", "COMPLETING")


def test_queued_job_shows_reason_cancel_and_start(cluster: dict[str, Any]) -> None:
    hub: HubProcess = cluster["hub"]
    filler = submit_filler()
    cluster["fillers"].extend(filler)
    first, second = new_user(hub), new_user(hub)
    try:
        assert hub.api("POST", f"/users/{first}/server").status_code == 202
        events = progress_until(hub, first, "reason")
        assert "is queued (PENDING, reason: " in events[-1]["message"], events
        job = job_of(hub, first)
        assert squeue(job) == "PENDING"
        # Cancel while pending: the job goes, the start ends failed/cancelled.
        assert hub.api("DELETE", f"/users/{first}/server").status_code in (202, 204)
        wait_stopped(hub, first)
        assert squeue(job) in ("", "CANCELLED")
        assert hub.api("POST", f"/users/{second}/server").status_code == 202
        progress_until(hub, second, "reason")
    finally:
        scancel(*filler)
    wait_ready(hub, second)
    assert hub.api("DELETE", f"/users/{second}/server").status_code in (202, 204)


def test_scancel_from_outside_is_noticed(cluster: dict[str, Any]) -> None:
    hub: HubProcess = cluster["hub"]
    name = new_user(hub)
    hub.api("POST", f"/users/{name}/server")
    job = wait_ready(hub, name)["state"]["job_id"]
    scancel(job)
    wait_stopped(hub, name, timeout=15)
    routes = hub.api("GET", "/proxy").json()
    assert not any(name in path for path in routes)
    assert "cancelled" in home_text(hub, name)


def test_controller_down_for_a_few_polls(cluster: dict[str, Any]) -> None:
    hub: HubProcess = cluster["hub"]
    name = new_user(hub)
    hub.api("POST", f"/users/{name}/server")
    job = wait_ready(hub, name)["state"]["job_id"]
    pid = int(CTLD_PID.read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        hub.wait_for(lambda: not Path(f"/proc/{pid}").exists() or
                     "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], timeout=20)
        # squeue retries the controller for a while, then fails: polls go on meanwhile.
        hub.wait_for(lambda: "squeue failed" in hub.log_text(), timeout=60)
        time.sleep(2)  # two more poll intervals
        model = hub.api("GET", f"/users/{name}").json()["servers"][""]
        assert model["ready"] is True
    finally:
        subprocess.run(["/usr/sbin/slurmctld"], check=True, timeout=30)
    hub.wait_for(lambda: squeue(job) == "RUNNING", timeout=30)
    scancel(job)  # and the hub hears about it again
    wait_stopped(hub, name, timeout=20)


def test_hub_restart_reattaches_running_and_queued(cluster: dict[str, Any]) -> None:
    hub: HubProcess = cluster["hub"]
    running, queued = new_user(hub), new_user(hub)
    hub.api("POST", f"/users/{running}/server")
    run_job = wait_ready(hub, running)["state"]["job_id"]
    filler = submit_filler()
    cluster["fillers"].extend(filler)
    try:
        assert hub.api("POST", f"/users/{queued}/server").status_code == 202
        progress_until(hub, queued, "reason")
        queued_job = job_of(hub, queued)
        hub.stop(signal.SIGKILL)
        hub.start()
        assert squeue(run_job) == "RUNNING"
        assert squeue(queued_job) == "PENDING", hub.log_text()[-6000:]
        assert hub.api("GET", f"/users/{running}").json()["servers"][""]["ready"] is True
        model = hub.api("GET", f"/users/{queued}").json()["servers"][""]
        assert model["pending"] == "spawn", hub.log_text()[-5000:]
        assert model["state"]["job_id"] == queued_job
    finally:
        scancel(*filler)
    wait_ready(hub, queued)
    token = hub.make_token(running)
    r = requests.get(hub.public + f"{hub.base_path}user/{running}/api/status",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200
    for name in (running, queued):
        hub.api("DELETE", f"/users/{name}/server")


def test_walltime_runs_out_and_is_reported(cluster: dict[str, Any]) -> None:
    hub: HubProcess = cluster["hub"]
    name = new_user(hub)
    r = hub.api("POST", f"/users/{name}/server", json={"profile": "standard", "walltime": 1})
    assert r.status_code in (201, 202), r.text
    job = wait_ready(hub, name)["state"]["job_id"]
    wait_stopped(hub, name, timeout=120)
    assert squeue(job) in ("", "TIMEOUT")
    assert "walltime limit" in home_text(hub, name)


@pytest.mark.parametrize(("options", "field"), [
    ({"profile": "standard", "walltime": 121}, "walltime"),
    ({"profile": "standard", "walltime": "1:00:00"}, "walltime"),
    ({"profile": "standard", "partition": "nope"}, "partition"),
    ({"profile": "standard", "gpus": 1}, "gpus"),
    ({"profile": "staff"}, "profile"),
    ({"profile": "huge"}, "profile"),
])
def test_bad_options_are_refused_before_anything_runs(cluster: dict[str, Any],
                                                      options: dict[str, Any],
                                                      field: str) -> None:
    hub: HubProcess = cluster["hub"]
    name = new_user(hub)
    r = hub.api("POST", f"/users/{name}/server", json=options)
    assert r.status_code == 400
    assert r.json()["message"].startswith(f"Invalid user options: {field}: ")
    assert hub.api("GET", f"/users/{name}").json()["servers"] == {}
    with pytest.raises(KeyError):  # no sbatch ran: the account is made only for a start
        pwd.getpwnam(cluster["prefix"] + name)


def test_schema_per_group_and_last_choice(cluster: dict[str, Any]) -> None:
    hub: HubProcess = cluster["hub"]
    name = new_user(hub)
    got = hub.api("GET", f"/users/{name}/server/options").json()
    assert got["last"] is None
    assert got["schema"]["properties"]["profile"]["enum"] == ["standard"]
    walltime = got["schema"]["oneOf"][0]["properties"]["walltime"]
    assert (walltime["minimum"], walltime["maximum"], walltime["type"]) == (1, 120, "integer")
    assert hub.api("POST", "/groups/hpc-staff").status_code in (201, 409)
    assert hub.api("POST", "/groups/hpc-staff/users", json={"users": [name]}).status_code == 200
    got = hub.api("GET", f"/users/{name}/server/options").json()
    assert got["schema"]["properties"]["profile"]["enum"] == ["standard", "staff"]
    r = hub.api("POST", f"/users/{name}/servers/long", json={"profile": "staff",
                                                             "walltime": 300})
    assert r.status_code in (201, 202), r.text
    job = hub.wait_for(lambda: hub.api("GET", f"/users/{name}").json()["servers"]
                       .get("long", {}).get("state", {}).get("job_id"), timeout=60)
    assert squeue(job, "%l") == "5:00:00"
    assert hub.api("DELETE", f"/users/{name}/servers/long").status_code in (202, 204)
    got = hub.api("GET", f"/users/{name}/servers/long/options").json()
    assert got["last"] == {"profile": "staff", "partition": "debug", "walltime": 300}
    # A server never started with options preselects the latest choice.
    assert hub.api("GET", f"/users/{name}/server/options").json()["last"]["profile"] == "staff"


def test_port_reports_need_the_servers_own_token(cluster: dict[str, Any]) -> None:
    hub: HubProcess = cluster["hub"]
    name = new_user(hub)
    r = hub.api("POST", "/batchspawner", json={"port": 1234})  # the admin's token
    assert r.status_code == 403
    assert hub.api("POST", "/batchspawner", token=hub.make_token(name),
                   json={"port": 1234}).status_code == 403
    assert hub.api("POST", "/batchspawner", json={"port": 0}).status_code == 400
    assert hub.api("POST", "/batchspawner", json={"port": "80"}).status_code == 400
