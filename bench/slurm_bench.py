"""What the hub adds to a Slurm spawn, and what polling many jobs costs it. Needs root and a
running Slurm (``bash scripts/slurm_up.sh``).

1. **Spawn overhead.** A real hub (``spawner = "slurm"``, ``accounts = "create"``, the tests'
   tiny server as the job's single-user command) on loopback. Each run: ``POST
   /users/<name>/server`` until the progress stream's ``ready`` event (t_ready), minus the time
   from ``sbatch`` returning (the hub's "submitted batch job" log line, ms timestamps) to the
   job's server answering ``GET <prefix>api`` directly on its node port (probed every 5 ms once
   the job's state names the port). One warm-up, then ``--runs`` (median, min, max). Target:
   median ≤ 0.5 s plus one poll interval (``SlurmSpawner.wait_interval``, 1 s).
2. **Polling 200 jobs.** ``--jobs`` held (pending) jobs are submitted as root; that many
   :class:`SlurmSpawner` objects re-attached to them (``load_state``) are each polled once per
   round, as the hub's poll loop does, for ``--rounds`` rounds: ``squeue`` calls per round and the
   hub process's CPU per round (its own plus its children's, i.e. ``squeue``'s). Target: one
   ``squeue`` per round, not one per job.

Usage: ``sudo .venv/bin/python bench/slurm_bench.py [--runs 10] [--jobs 200] [--rounds 10]``.
Writes ``bench/results/slurm.md`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hub.config import Config  # noqa: E402
from hub.services.slurm_spawner import SlurmSpawner  # noqa: E402
from tests import unixaccounts  # noqa: E402
from tests.hubproc import HubProcess  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "slurm.md"
SUBMITTED = re.compile(r"\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) hub\.services\.slurm_spawner\]"
                       r" submitted batch job (\d+)")


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def one_spawn(hub: HubProcess, name: str) -> tuple[float, float]:
    """(POST → ready, sbatch → the job's server answering), in seconds."""
    t0 = time.time()
    r = hub.api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text
    answered: float | None = None
    ready: float | None = None
    prefix = f"{hub.base_path}user/{name}/"
    port = None
    while ready is None or answered is None:
        if port is None:
            model = hub.api("GET", f"/users/{name}").json()["servers"].get("", {})
            port = (model.get("state") or {}).get("port")
            if model.get("ready"):
                ready = ready or time.time()
        if port is not None and answered is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{prefix}api",
                                            timeout=1) as answer:
                    if answer.status < 500:
                        answered = time.time()
            except OSError:
                pass
        if port is not None and ready is None:
            if hub.api("GET", f"/users/{name}").json()["servers"].get("", {}).get("ready"):
                ready = time.time()
        time.sleep(0.005)
    job = hub.api("GET", f"/users/{name}").json()["servers"][""]["state"]["job_id"]
    submitted = next(_log_time(m[1]) for m in SUBMITTED.finditer(hub.log_text())
                     if m[2] == job)
    hub.api("DELETE", f"/users/{name}/server")
    hub.wait_for(lambda: not hub.api("GET", f"/users/{name}").json()["servers"], timeout=60)
    return ready - t0, answered - submitted


def spawn_overhead(runs: int) -> list[float]:
    prefix = unixaccounts.unique_prefix()
    world = unixaccounts.world_dir("himalia-bench-")
    mock = REPO / "tests" / "hub" / "mockserver.py"
    config = world / "himalia.toml"
    config.write_text(f"singleuser_cmd = [{json.dumps(sys.executable)}, {json.dumps(str(mock))}]\n")
    hub = HubProcess(world / "data", extra_args=[
        "--config", str(config), "--hub-port", str(_free_port()), "--accounts", "create",
        "--account-prefix", prefix, "--spawner", "slurm", "--slurm-bind-ip", "127.0.0.1",
        "--log-level", "INFO"])
    overheads: list[float] = []
    try:
        hub.start()
        name, _ = hub.new_user("b")
        one_spawn(hub, name)  # warm-up (and useradd)
        for i in range(runs):
            total, job = one_spawn(hub, name)
            overheads.append(total - job)
            print(f"run {i + 1}: POST→ready {total * 1000:.0f} ms, sbatch→answer "
                  f"{job * 1000:.0f} ms, hub adds {(total - job) * 1000:.0f} ms", flush=True)
    finally:
        hub.cleanup()
        unixaccounts.remove_with_prefix(prefix)
        shutil.rmtree(world, ignore_errors=True)
    return overheads


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def polling(jobs: int, rounds: int) -> dict[str, float]:
    ids = []
    for _ in range(jobs):
        done = subprocess.run(["sbatch", "--parsable", "--hold", "--job-name=poll-bench",
                               "--output=/dev/null", "--time=5"], input="#!/bin/sh\nsleep 60\n",
                              capture_output=True, text=True, check=True, timeout=30)
        ids.append(done.stdout.strip().split(";")[0])
    try:
        cfg = Config()
        spawners = []
        for i, job in enumerate(ids):
            sp = SlurmSpawner(cfg, f"u{i}", hub_api_url="http://127.0.0.1:1/hub/api")
            sp.load_state({"job_id": job, "uid": 0})
            spawners.append(sp)
        queue = spawners[0].queue

        async def run() -> tuple[list[float], list[float], int]:
            walls, cpus = [], []
            start_calls = queue.calls
            for _ in range(rounds):
                c0, w0 = _cpu(), time.perf_counter()
                statuses = [await sp.poll() for sp in spawners]
                assert all(s is None for s in statuses)  # all pending, none "ended"
                cpus.append(_cpu() - c0)
                walls.append(time.perf_counter() - w0)
                await asyncio.sleep(1.0)  # the next poll interval
            return walls, cpus, queue.calls - start_calls

        walls, cpus, calls = asyncio.run(run())
    finally:
        subprocess.run(["scancel", *ids], check=False, timeout=60)
    return {"calls_per_round": calls / rounds, "cpu_ms": statistics.median(cpus) * 1000,
            "wall_ms": statistics.median(walls) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (jobs are submitted as created accounts)")
    over = spawn_overhead(args.runs)
    poll = polling(args.jobs, args.rounds)
    load = os.getloadavg()[0]
    ms = [x * 1000 for x in over]
    text = (
        f"# Slurm spawn overhead and polling ({platform.node()}, {os.cpu_count()} CPUs, "
        f"load {load:.1f}, {datetime.now().isoformat(timespec='minutes')})\n\n"
        f"Hub's share of a spawn (POST → ready minus sbatch → job's server answering), "
        f"{args.runs} runs, tiny server:\n\n"
        f"| median | min | max |\n|---|---|---|\n"
        f"| {statistics.median(ms):.0f} ms | {min(ms):.0f} ms | {max(ms):.0f} ms |\n\n"
        f"Polling {args.jobs} pending jobs, {args.rounds} rounds (median per round):\n\n"
        f"| squeue calls per round | hub CPU per round (incl. squeue) | wall per round |\n"
        f"|---|---|---|\n"
        f"| {poll['calls_per_round']:g} | {poll['cpu_ms']:.0f} ms | {poll['wall_ms']:.0f} ms |\n")
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
