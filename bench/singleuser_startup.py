"""Measure how long ``himalia-singleuser`` takes to start.

Each run starts the server as a real process with a ``JUPYTERHUB_*`` environment pointing at a
minimal stand-in hub API (a thread answering ``GET /hub/api`` with 200 and activity POSTs with
204), and measures wall-clock time from process start until ``GET <prefix>api`` answers < 500 —
the hub's own readiness check. The server is then stopped with SIGTERM.

With ``--baseline`` the same is measured for a stock ``jupyter lab`` (all installed server
extensions, no hub), for comparison.

Usage::

    .venv/bin/python bench/singleuser_startup.py [--runs 10] [--baseline] [--output FILE]

Prints the median and maximum and writes them, with the machine's details, to
``bench/results/singleuser.md`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import http.server
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

PREFIX = "/user/bench/"
RESULTS = Path(__file__).parent / "results" / "singleuser.md"
TIMEOUT = 60.0


class _HubAPI(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"version": "5.0.0"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def singleuser_command(api_url: str, home: Path, port: int) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "VIRTUAL_ENV")}
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERHUB_API_TOKEN="bench-token",
        JUPYTERHUB_API_URL=api_url,
        JUPYTERHUB_CLIENT_ID="jupyterhub-user-bench",
        JUPYTERHUB_USER="bench",
        JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}{PREFIX}",
        JUPYTERHUB_ACTIVITY_URL=f"{api_url}/users/bench/activity",
    )
    return [sys.executable, "-m", "singleuser"], env


def baseline_command(home: Path, port: int) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "VIRTUAL_ENV")}
    env.update(
        HOME=str(home),
        JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
    )
    lab = shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) or "jupyter-lab"
    return [
        lab,
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.base_url={PREFIX}",
        "--IdentityProvider.token=",
    ], env


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy


def ready(url: str) -> bool:
    try:
        with _opener.open(url, timeout=1) as response:
            return int(response.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def one_run(baseline: bool, api_url: str) -> float:
    with tempfile.TemporaryDirectory(prefix="himalia-bench-") as tmp:
        home = Path(tmp)
        port = free_port()
        argv, env = (
            baseline_command(home, port) if baseline else singleuser_command(api_url, home, port)
        )
        log = (home / "server.log").open("wb")
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}{PREFIX}api"
            while not ready(url):
                if proc.poll() is not None or time.perf_counter() - start > TIMEOUT:
                    log.close()
                    output = (home / "server.log").read_text()
                    raise SystemExit(f"server failed to start:\n{output}")
                time.sleep(0.01)
            return time.perf_counter() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def measure(runs: int, baseline: bool, api_url: str) -> list[float]:
    one_run(baseline, api_url)  # warm-up: file-system caches
    return [one_run(baseline, api_url) for _ in range(runs)]


def summary(name: str, times: list[float]) -> str:
    return (
        f"| {name} | {len(times)} | {statistics.median(times):.2f} s | {max(times):.2f} s "
        f"| {min(times):.2f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--baseline", action="store_true", help="also measure a stock `jupyter lab` for comparison"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api_url = f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    try:
        rows = [summary("himalia-singleuser", measure(args.runs, False, api_url))]
        if args.baseline:
            rows.append(
                summary("stock `jupyter lab` (baseline)", measure(args.runs, True, api_url))
            )
    finally:
        server.shutdown()

    table = "\n".join(["| server | runs | median | max | min |", "|---|---|---|---|---|", *rows])
    print(table)
    report = f"""# Single-user server start-up time

Process start → `GET {PREFIX}api` answers (< 500), the hub's readiness check; one warm-up run
first, then `{args.runs}` measured runs. Produced by `bench/singleuser_startup.py`.
What saves time against stock JupyterLab: only the needed server extensions are loaded
(`SERVER_EXTENSIONS` in `singleuser/app.py`) and jsonschema's optional `rfc3987_syntax`
import (~0.9 s compiling a grammar nobody uses) is skipped (`_skip_slow_optional_imports`).

{table}

- date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}
- 1-minute load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}
  (other work on the machine inflates the numbers; compare runs made under similar load)
"""
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
