"""Spawn → ready time through a real hub: one shared account vs. each user's own account.

For each mode (``--accounts hub`` and ``--accounts create``) a real hub (and its proxy) runs on
ephemeral loopback ports; one user's server is started through the REST API and timed from the
``POST /users/<name>/server`` until the API reports it ``ready`` (polled every 10 ms), then
stopped; one warm-up, then ``--runs`` measured starts, the two modes alternating so that drift
in the machine's load hits both alike. In ``create`` mode the first start also makes the Unix
account (``useradd``); that one-off cost is reported on its own line.

Two servers can be timed: the real ``himalia-singleuser`` (JupyterLab; seconds, so the account
switch is lost in its noise) and, with ``--server tiny`` (the default), the tests' small fake
server, which isolates what the hub and the account switch add.

Usage (as root, for ``create``)::

    .venv/bin/python bench/spawn_bench.py [--runs 10] [--server tiny|real] [--output FILE]

Writes a Markdown table to ``bench/results/spawn.md`` (or ``--output``). Accounts it made
(``hxbench-*``) are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "spawn.md"
PREFIX = "hxbench-"
LISTEN_RE = re.compile(r"himalia: hub listening on (\S+), public URL (\S+)")


class Hub:
    """A hub process in ``mode``, with an admin token."""

    def __init__(self, mode: str, server: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="himalia-bench-"))
        self.dir.chmod(0o755)  # the tiny server's accounts must reach nothing here but this
        config = self.dir / "himalia.toml"
        if server == "tiny":
            mock = REPO / "tests" / "hub" / "mockserver.py"
            config.write_text(f"singleuser_cmd = [{json.dumps(sys.executable)}, "
                              f"{json.dumps(str(mock))}, \"--mode\", \"normal\"]\n")
        else:
            config.write_text("")
        argv = [sys.executable, "-m", "hub", "--config", str(config), "--data-dir",
                str(self.dir / "data"), "--port", "0", "--hub-port", "0", "--proxy-api-port",
                "0", "--accounts", mode, "--account-prefix", PREFIX, "--log-level", "WARNING",
                "--server-poll-interval", "30"]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        self.public = ""

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if m := LISTEN_RE.search(line):
                    self.public = m.group(2)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or not self.public:
            raise SystemExit(f"the hub ({mode}) did not start")
        done = subprocess.run([sys.executable, "-m", "hub", "token", "admin", "--data-dir",
                               str(self.dir / "data")], capture_output=True, text=True,
                              check=True, cwd=REPO)
        self.token = done.stdout.strip()

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.public.rstrip("/") + "/hub/api" + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def spawn_time(self, user: str) -> float:
        """Seconds from the start request until the server is ready; stops it after."""
        t0 = time.perf_counter()
        status, _ = self.api("POST", f"/users/{user}/server")
        if status not in (201, 202):
            raise SystemExit(f"start failed: {status}")
        while True:
            _, model = self.api("GET", f"/users/{user}")
            server = model["servers"].get("")
            if server and server["ready"]:
                elapsed = time.perf_counter() - t0
                break
            time.sleep(0.01)
        self.api("DELETE", f"/users/{user}/server")
        while self.api("GET", f"/users/{user}")[1]["servers"]:
            time.sleep(0.02)
        return elapsed

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        record = self.dir / "data" / "proxy.json"
        if record.exists():
            pid = int(json.loads(record.read_text())["pid"])
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def remove_accounts() -> None:
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(PREFIX):
            subprocess.run(["userdel", "--remove", "--force", entry.pw_name],
                           capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--server", choices=("tiny", "real"), default="tiny")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the 'create' mode makes Unix accounts")
    remove_accounts()
    load_before = os.getloadavg()[0]
    hubs = {mode: Hub(mode, args.server) for mode in ("hub", "create")}
    times: dict[str, list[float]] = {"hub": [], "create": []}
    first_create = 0.0
    try:
        for mode, hub in hubs.items():
            hub.api("POST", "/users/bench")
            warm = hub.spawn_time("bench")  # warm-up; in create mode this makes the account
            if mode == "create":
                first_create = warm
        for _ in range(args.runs):
            for mode, hub in hubs.items():
                times[mode].append(hub.spawn_time("bench"))
    finally:
        for hub in hubs.values():
            hub.close()
        remove_accounts()
    rows = []
    for mode, label in (("hub", "one shared account (`accounts = \"hub\"`)"),
                        ("create", "each user's own account (`accounts = \"create\"`)")):
        t = times[mode]
        rows.append(f"| {label} | {len(t)} | {statistics.median(t) * 1000:.0f} ms | "
                    f"{min(t) * 1000:.0f} ms | {max(t) * 1000:.0f} ms |")
    delta = (statistics.median(times["create"]) - statistics.median(times["hub"])) * 1000
    server = "the tests' tiny server" if args.server == "tiny" else "himalia-singleuser"
    text = "\n".join([
        "# Spawn → ready: shared account vs. per-user accounts", "",
        f"`POST /users/bench/server` → the API says `ready`, with {server}; one warm-up, then "
        f"{args.runs} runs per mode, alternating. Produced by `bench/spawn_bench.py "
        f"--server {args.server}`.", "",
        "| mode | runs | median | min | max |", "|---|---|---|---|---|", *rows, "",
        f"- account switching adds **{delta:+.0f} ms** to the median",
        f"- first start in `create` mode, `useradd` included: {first_create * 1000:.0f} ms",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        f"- 1-minute load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}",
        "",
    ])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
