"""Benchmark Himalia's proxy against configurable-http-proxy (CHP) on loopback.

One run starts a fast backend (``bench/_backend.py``: uvloop + httptools, HTTP keep-alive, a
websocket echo and 100 MB streaming endpoints), installs CHP 5 with npm into a temporary directory,
starts CHP and ``python -m proxy`` (both with the backend as default target, logging at warning
level) and measures, for each proxy and for the backend reached directly:

* req/s and p50/p99 latency with 50 keep-alive connections (``wrk -t1`` when on PATH, else the
  Python load generator in ``bench/_loadgen.py``);
* a 100 MB streamed upload and download: time, and the proxy's peak RSS (``VmHWM``, reset through
  ``/proc/PID/clear_refs`` before each transfer);
* websocket echo messages/s (50 connections, one 32-byte message in flight each);
* RSS and open FDs before and after 10,000 websocket connect/disconnect cycles;
* req/s across 1,000 distinct user paths with only the default route, then with 10,000 routes,
  and the time to add those routes through the REST API.

Each HTTP run also records the proxy's CPU time (requests per proxy CPU-second, a figure that
other work on the machine disturbs less than req/s) and the share of the CPUs used by unrelated
processes (``/proc/stat`` minus the bench's own processes); above 5 % the report says the run was
disturbed.

It prints a table, the ratio lines ``himalia/chp req/s = X`` and ``himalia/chp p99 = Y``, and checks
the targets of the proxy issue: req/s >= 5x CHP, p99 <= 0.3x CHP, RSS <= CHP, FDs and RSS flat after
the websocket churn, no throughput loss at 10k routes.

Usage::

    .venv/bin/python bench/proxy_bench.py                      # full run, ~2.5 minutes
    .venv/bin/python bench/proxy_bench.py --quick              # smoke test, ~30 s
    .venv/bin/python bench/proxy_bench.py --repeat 2 --markdown bench/results/proxy.md
    .venv/bin/python bench/proxy_bench.py --skip-chp --profile /tmp/prof   # py-spy hot spots

(``--repeat N`` keeps the best of N runs of each HTTP load; ``--check`` exits 1 on a missed target.)

CPU placement: the machine this was written on has 2 cores shared by the load generator
(``wrk -t1``: one thread), the backend (one process), the proxy under test and this script.  By
default (``--pin off``) the scheduler places them.  ``--pin proxy`` pins the proxy to the last CPU
and everything else to the others; it gives Himalia's single-threaded proxy the same req/s but
roughly halves CHP's (node's GC and libuv threads then compete with its event loop for one CPU),
so it flatters Himalia and is not the default.  Close other work first: the script warns when the
load average is above 0.5.  Every process is started on 127.0.0.1 with a bounded timeout and
stopped by PID (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
CHP_SPEC = "configurable-http-proxy@5"
LISTEN_RE = re.compile(
    r"himalia-proxy: listening on https?://[^:]+:(\d+), api on https?://[^:]+:(\d+)"
)
MB = 1024 * 1024

Measures = dict[str, Any]


def log(msg: str) -> None:
    """Progress output (stderr, so stdout stays the report)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process we started, with its output captured in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL by PID if it has not exited within 10 s."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.pid}) ignored SIGTERM; killing it")
            self.popen.kill()
            self.popen.wait(10)


def affinity_setter(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` pinning the child to ``cpus`` before it execs (so all its threads are)."""
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def start(
    stack: contextlib.ExitStack,
    name: str,
    argv: Sequence[str],
    workdir: Path,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
) -> Proc:
    """Start ``argv``, output to ``workdir/name.log``; stopped by PID when ``stack`` closes."""
    log_path = workdir / f"{name}.log"
    out = open(log_path, "wb")
    stack.callback(out.close)
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(REPO),
        preexec_fn=affinity_setter(cpus),
    )
    proc = Proc(name, popen, log_path)
    stack.callback(proc.stop)
    return proc


def wait_for_log(proc: Proc, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
    """Poll ``proc``'s log until ``pattern`` matches; fail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = pattern.search(proc.log_path.read_text(errors="replace"))
        if match:
            return match
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not start within {timeout:.0f} s:\n{proc.log_tail()}")


def free_port() -> int:
    """An ephemeral port that was free a moment ago (for CHP, which needs fixed ports)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: Proc, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not listening on {port} after {timeout:.0f} s")


# -- /proc measurements ---------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a proxy might fork workers)."""
    pids = [pid]
    i = 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with contextlib.suppress(OSError):
                    with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                        pids += [int(c) for c in f.read().split()]
        i += 1
    return pids


def status_kb(pid: int, field_name: str) -> int:
    """Sum of a ``/proc/PID/status`` field (kB) over the process tree."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    total += int(line.split()[1])
                    break
    return total


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def hwm_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") / 1024


def reset_hwm(pid: int) -> bool:
    """Reset the peak RSS to the current RSS (``echo 5 > /proc/PID/clear_refs``)."""
    ok = True
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


def open_fds(pid: int) -> int:
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree (all threads), in seconds."""
    ticks = 0
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / CLK_TCK


def system_busy_seconds() -> float:
    """CPU time charged to processes machine-wide, plus time stolen by the hypervisor.

    Counts user, nice, system and steal from ``/proc/stat``; irq and softirq time (loopback
    packet processing, charged to no process) is left out.
    """
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
            int(v) for v in f.readline().split()[1:9]
        )
    return (user + nice + system + steal) / CLK_TCK


def own_children_seconds() -> float:
    """CPU time of this script and of its finished children (the load generators)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class CpuMeter:
    """CPU used during one run by the proxy, by the bench's own processes and by the rest."""

    proxy_pid: int | None
    backend_pid: int | None

    def __post_init__(self) -> None:
        self.wall = time.perf_counter()
        self.proxy = cpu_seconds(self.proxy_pid) if self.proxy_pid else 0.0
        self.backend = cpu_seconds(self.backend_pid) if self.backend_pid else 0.0
        self.own = own_children_seconds()
        self.busy = system_busy_seconds()

    def stop(self) -> Measures:
        """Seconds of proxy CPU, and the share of all CPUs used by unrelated processes."""
        wall = time.perf_counter() - self.wall
        proxy = (cpu_seconds(self.proxy_pid) if self.proxy_pid else 0.0) - self.proxy
        backend = (cpu_seconds(self.backend_pid) if self.backend_pid else 0.0) - self.backend
        own = own_children_seconds() - self.own
        busy = system_busy_seconds() - self.busy
        foreign = max(0.0, busy - proxy - backend - own)
        return {
            "proxy_cpu_s": proxy,
            "foreign_cpu_pct": 100.0 * foreign / (wall * (os.cpu_count() or 1)),
        }


def settle(pid: int, timeout: float = 10.0) -> None:
    """Wait until the FD count has not changed for 1 s (sockets being torn down)."""
    deadline = time.monotonic() + timeout
    last, since = open_fds(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = open_fds(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            return


# -- load generation ------------------------------------------------------------------------------


WRK_SCRIPT = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local reqs = {}
local i = 0
init = function(args)
  for k, p in ipairs(paths) do reqs[k] = wrk.format("GET", p) end
end
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
"""


def parse_wrk_time(value: str) -> float:
    """``812.00us`` / ``1.23ms`` / ``2.00s`` -> milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(f"unparsable wrk latency {value!r}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[match.group(2)]
    return float(match.group(1)) * scale


def parse_wrk(output: str) -> Measures:
    """Extract req/s, p50/p99 and error counts from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise RuntimeError(f"could not parse wrk output:\n{output}")
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors = sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = re.search(r"(\d+) requests in", output)
    return {
        "requests": int(requests.group(1)) if requests else 0,
        "rps": float(rps.group(1)),
        "p50_ms": parse_wrk_time(p50.group(1)),
        "p99_ms": parse_wrk_time(p99.group(1)),
        "errors": errors,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


@dataclass
class Runner:
    """Runs load generators; knows which tool to use and how long to run."""

    loadgen: str  # "wrk" or "python"
    connections: int
    duration: float
    warmup: float
    workdir: Path
    paths_file: Path | None = None
    lua_file: Path | None = None
    repeat: int = 1
    backend_pid: int | None = None

    def loadgen_json(self, args: Sequence[str], timeout: float) -> Measures:
        """Run ``bench/_loadgen.py args`` and return its JSON result."""
        cmd = [PYTHON, str(HERE / "_loadgen.py"), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:1])} load generator failed:\n{done.stderr[-2000:]}"
            )
        result: Measures = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def http(self, port: int, pid: int | None = None, many_paths: bool = False) -> Measures:
        """req/s and latency at ``connections`` keep-alive connections, after a warm-up run.

        With ``repeat`` > 1 the run with the highest req/s is kept (the least disturbed one).
        ``pid`` is the proxy's, to charge it its CPU time.
        """
        if self.warmup > 0:
            self._http(port, many_paths, self.warmup)
        best: Measures | None = None
        for _ in range(max(1, self.repeat)):
            meter = CpuMeter(pid, self.backend_pid)
            result = self._http(port, many_paths, self.duration)
            result.update(meter.stop())
            if best is None or result["rps"] > best["rps"]:
                best = result
        assert best is not None
        best["bad"] = best["errors"] + best["non_2xx"]
        cpu = best["proxy_cpu_s"]
        best["req_per_cpu_s"] = best["requests"] / cpu if pid and cpu > 0 else None
        return best

    def _http(self, port: int, many_paths: bool, duration: float) -> Measures:
        if self.loadgen == "wrk":
            cmd = ["wrk", "-t1", f"-c{self.connections}", f"-d{max(1, round(duration))}s"]
            cmd += ["--latency", "--timeout", "10s"]
            if many_paths:
                assert self.lua_file is not None
                cmd += ["-s", str(self.lua_file)]
            cmd.append(f"http://{HOST}:{port}/")
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=duration + 60, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
            return parse_wrk(done.stdout)
        args = ["http", "--port", str(port), "--connections", str(self.connections)]
        args += ["--duration", str(duration)]
        if many_paths:
            assert self.paths_file is not None
            args += ["--paths-file", str(self.paths_file)]
        return self.loadgen_json(args, duration + 60)

    def ws_echo(self, port: int) -> Measures:
        args = ["ws-echo", "--port", str(port), "--connections", str(self.connections)]
        args += ["--duration", str(self.duration)]
        return self.loadgen_json(args, self.duration + 60)

    def ws_churn(self, port: int, cycles: int) -> Measures:
        args = ["ws-churn", "--port", str(port), "--cycles", str(cycles), "--concurrency", "20"]
        return self.loadgen_json(args, 60 + cycles / 50)

    def transfer(self, mode: str, port: int, size: int) -> Measures:
        return self.loadgen_json([mode, "--port", str(port), "--bytes", str(size)], 300)


# -- proxies --------------------------------------------------------------------------------------


@dataclass
class Target:
    """A proxy under test (or the backend itself, reached directly)."""

    name: str
    port: int
    api_port: int | None
    proc: Proc | None
    token: str = ""


def install_chp(workdir: Path) -> tuple[Path | None, str]:
    """``npm install`` CHP into ``workdir``; returns (path of its CLI script, reason if failed)."""
    npm = shutil.which("npm")
    node = shutil.which("node")
    if not npm or not node:
        return None, "npm/node not on PATH"
    prefix = workdir / "chp"
    log(f"installing {CHP_SPEC} with npm into {prefix}")
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), CHP_SPEC],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "npm install timed out after 300 s"
    cli = prefix / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
    if done.returncode != 0 or not cli.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return None, "npm install failed: " + " | ".join(tail)
    return cli, ""


def chp_version(cli: Path) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads((cli.parent.parent / "package.json").read_text())["version"])
    return "?"


def start_chp(
    stack: contextlib.ExitStack, cli: Path, backend: str, workdir: Path, cpus: set[int] | None
) -> Target:
    token = secrets.token_hex(16)
    port, api_port = free_port(), free_port()
    node = shutil.which("node") or "node"
    argv = [node, str(cli), "--ip", HOST, "--port", str(port), "--api-ip", HOST]
    argv += ["--api-port", str(api_port), "--default-target", backend, "--log-level", "warn"]
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=token)
    proc = start(stack, "chp", argv, workdir, env=env, cpus=cpus)
    wait_port(api_port, proc)
    wait_port(port, proc)
    return Target("chp", port, api_port, proc, token)


def start_himalia(
    stack: contextlib.ExitStack, backend: str, workdir: Path, cpus: set[int] | None
) -> Target:
    token = secrets.token_hex(16)
    argv = [PYTHON, "-m", "proxy", "--ip", HOST, "--port", "0", "--api-ip", HOST]
    argv += ["--api-port", "0", "--default-target", backend, "--log-level", "warning"]
    argv += ["--routes-file", str(workdir / "himalia-routes.json")]
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=token)
    proc = start(stack, "himalia", argv, workdir, env=env, cpus=cpus)
    match = wait_for_log(proc, LISTEN_RE, 30)
    return Target("himalia", int(match.group(1)), int(match.group(2)), proc, token)


def add_routes(target: Target, paths: Sequence[str], backend: str) -> float:
    """POST every route over one keep-alive API connection; returns the seconds taken."""
    assert target.api_port is not None
    conn = http.client.HTTPConnection(HOST, target.api_port, timeout=30)
    headers = {"Authorization": f"token {target.token}", "Content-Type": "application/json"}
    body = json.dumps({"target": backend}).encode()
    start_t = time.perf_counter()
    try:
        for path in paths:
            conn.request("POST", "/api/routes" + path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                raise RuntimeError(f"{target.name}: POST /api/routes{path} -> {response.status}")
        elapsed = time.perf_counter() - start_t
        conn.request("GET", "/api/routes", headers=headers)
        response = conn.getresponse()
        routes = json.loads(response.read())
    finally:
        conn.close()
    missing = [p for p in paths[:: max(1, len(paths) // 100)] if p not in routes]
    if missing:
        raise RuntimeError(f"{target.name}: routes missing after adding them, e.g. {missing[:3]}")
    return elapsed


# -- one proxy's measurements ---------------------------------------------------------------------


@dataclass
class Plan:
    """What to measure and how much."""

    transfer_bytes: int
    ws_cycles: int
    ws_warmup_cycles: int
    routes: int
    route_paths: list[str]
    sample_paths: list[str]
    backend_url: str


def measure_direct(runner: Runner, port: int, plan: Plan) -> Measures:
    """The backend without a proxy: the ceiling of this machine + load generator."""
    m: Measures = {}
    log("direct: HTTP keep-alive load")
    m["http"] = runner.http(port)
    log("direct: upload/download")
    m["upload"] = runner.transfer("upload", port, plan.transfer_bytes)
    m["download"] = runner.transfer("download", port, plan.transfer_bytes)
    log("direct: websocket echo")
    m["ws_echo"] = runner.ws_echo(port)
    return m


def measure_proxy(
    runner: Runner, target: Target, plan: Plan, profile_dir: Path | None = None
) -> Measures:
    """Every measurement of one proxy; the route table stays small until the last step."""
    assert target.proc is not None
    pid = target.proc.pid
    name = target.name
    m: Measures = {}
    settle(pid, 3)
    m["rss_idle"] = rss_mb(pid)
    m["fds_idle"] = open_fds(pid)

    # The churn runs first, while no pooled upstream HTTP connection can expire in the middle of
    # it and hide (or fake) a descriptor leak.
    log(f"{name}: websocket churn ({plan.ws_warmup_cycles} warm-up + {plan.ws_cycles} cycles)")
    if plan.ws_warmup_cycles:
        runner.ws_churn(target.port, plan.ws_warmup_cycles)
    settle(pid)
    m["churn_fds_before"] = open_fds(pid)
    m["churn_rss_before"] = rss_mb(pid)
    m["churn"] = runner.ws_churn(target.port, plan.ws_cycles)
    settle(pid)
    m["churn_fds_after"] = open_fds(pid)
    m["churn_rss_after"] = rss_mb(pid)

    log(f"{name}: HTTP keep-alive load ({runner.connections} connections)")
    m["http"] = runner.http(target.port, pid)
    m["rss_after_http"] = rss_mb(pid)
    if profile_dir is not None:
        log(f"{name}: py-spy profile of the keep-alive run")
        m["profile_http"] = profile_run(
            runner, target, profile_dir / f"{name}-http.txt", False, runner.duration
        )

    log(f"{name}: {plan.transfer_bytes // MB} MB upload and download")
    for mode in ("upload", "download"):
        m["hwm_reset"] = reset_hwm(pid)
        before = rss_mb(pid)
        m[mode] = runner.transfer(mode, target.port, plan.transfer_bytes)
        m[mode]["peak_rss"] = hwm_mb(pid)
        m[mode]["rss_before"] = before

    log(f"{name}: websocket echo")
    m["ws_echo"] = runner.ws_echo(target.port)

    log(f"{name}: req/s over {len(plan.sample_paths)} user paths, default route only")
    m["routes_1"] = runner.http(target.port, pid, many_paths=True)
    log(f"{name}: adding {plan.routes} routes")
    m["route_add_s"] = add_routes(target, plan.route_paths, plan.backend_url)
    log(f"{name}: req/s over the same paths with {plan.routes} routes")
    m["routes_n"] = runner.http(target.port, pid, many_paths=True)
    if profile_dir is not None:
        log(f"{name}: py-spy profile of the {plan.routes}-route run")
        m["profile_routes"] = profile_run(
            runner, target, profile_dir / f"{name}-routes.txt", True, runner.duration
        )
    m["rss_end"] = rss_mb(pid)
    m["fds_end"] = open_fds(pid)
    if not target.proc.alive():
        raise RuntimeError(f"{name} died during the benchmark:\n{target.proc.log_tail()}")
    return m


# -- profiling ------------------------------------------------------------------------------------


def py_spy() -> str | None:
    """The py-spy executable (next to this interpreter, or on PATH)."""
    here = Path(PYTHON).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def profile_run(
    runner: Runner, target: Target, out: Path, many_paths: bool, duration: float
) -> Measures:
    """Sample ``target`` with py-spy (raw collapsed stacks in ``out``) during one HTTP run."""
    exe = py_spy()
    assert exe is not None and target.proc is not None
    cmd = [exe, "record", "--pid", str(target.proc.pid), "--rate", "250", "--nonblocking"]
    cmd += ["--format", "raw", "--duration", str(max(1, round(duration))), "-o", str(out)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # let py-spy attach before the load starts
        result = runner._http(target.port, many_paths, duration)
        _, err = spy.communicate(timeout=30)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    return result


FRAME_RE = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def short_frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``, so lines of a function add up."""
    match = FRAME_RE.match(frame.strip())
    if not match:
        return frame.strip()
    func, path = match.groups()
    parts = Path(path).parts
    where = "/".join(parts[-2:]) if parts and parts[-2:-1] == ("proxy",) else Path(path).name
    return f"{func} ({where})"


def summarize_profile(raw: Path, top: int = 15) -> list[str]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [short_frame(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + n
    if total == 0:
        return [f"{raw.name}: no samples"]
    out = [f"{raw.name}: {total} busy samples", "  self time (where the CPU is):"]
    for f, n in sorted(self_n.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"    {100 * n / total:5.1f}%  {f}")
    out.append("  inclusive time (proxy/ functions):")
    ours = [(f, n) for f, n in incl_n.items() if "(proxy/" in f]
    for f, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        out.append(f"    {100 * n / total:5.1f}%  {f}")
    return out


# -- report ---------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    label: str
    direct: str
    chp: str
    himalia: str
    ratio: str = ""
    target: str = ""
    ok: bool | None = None

    def status(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def get(m: Measures | None, *keys: str) -> Any:
    """``m[k1][k2]...`` or None when anything is missing."""
    cur: Any = m
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def build_rows(
    direct: Measures | None,
    chp: Measures | None,
    him: Measures | None,
    plan: Plan,
    connections: int,
) -> list[Row]:
    """Turn the measurements into table rows with their targets."""
    mb = f"{plan.transfer_bytes // MB} MB"
    nr = f"{plan.routes // 1000}k" if plan.routes % 1000 == 0 else f"{plan.routes:,}"
    rows: list[Row] = []

    def add(
        label: str,
        keys: tuple[str, ...],
        digits: int,
        target: str = "",
        check: Callable[[float, float], bool] | None = None,
        show_ratio: bool = True,
    ) -> None:
        d, c, h = get(direct, *keys), get(chp, *keys), get(him, *keys)
        r = ratio(h, c)
        ok = None
        if check is not None and h is not None and c is not None:
            ok = check(h, c)
        rows.append(
            Row(
                label,
                fmt(d, digits),
                fmt(c, digits),
                fmt(h, digits),
                fmt(r, 2) + "x" if (r is not None and show_ratio) else "",
                target,
                ok,
            )
        )

    add(
        f"HTTP req/s, {connections} keep-alive conns",
        ("http", "rps"),
        0,
        ">= 5x CHP",
        lambda h, c: h >= 5 * c,
    )
    add("HTTP requests per proxy CPU-second", ("http", "req_per_cpu_s"), 0)
    add("HTTP p50 latency (ms)", ("http", "p50_ms"), 2)
    add("HTTP p99 latency (ms)", ("http", "p99_ms"), 2, "<= 0.3x CHP", lambda h, c: h <= 0.3 * c)
    add("HTTP socket errors + non-2xx", ("http", "bad"), 0, show_ratio=False)
    add("CPU used by other processes (%)", ("http", "foreign_cpu_pct"), 1, show_ratio=False)
    add(f"{mb} upload (s)", ("upload", "seconds"), 2)
    add(f"{mb} upload, peak RSS (MB)", ("upload", "peak_rss"), 1, "<= CHP", lambda h, c: h <= c)
    add(f"{mb} download (s)", ("download", "seconds"), 2)
    add(f"{mb} download, peak RSS (MB)", ("download", "peak_rss"), 1, "<= CHP", lambda h, c: h <= c)
    add(f"WS echo msg/s, {connections} conns", ("ws_echo", "mps"), 0)
    add("WS echo p99 RTT (ms)", ("ws_echo", "p99_ms"), 2)
    add("RSS idle after start (MB)", ("rss_idle",), 1)
    add("RSS after HTTP load (MB)", ("rss_after_http",), 1, "<= CHP", lambda h, c: h <= c)

    def before_after(
        label: str,
        before: str,
        after: str,
        digits: int,
        target: str,
        flat: Callable[[float, float], bool],
    ) -> None:
        cells = []
        oks = []
        for m in (chp, him):
            b, a = get(m, before), get(m, after)
            cells.append("-" if b is None else f"{fmt(b, digits)} -> {fmt(a, digits)}")
            oks.append(None if b is None or a is None else flat(b, a))
        rows.append(Row(label, "-", cells[0], cells[1], "", target, oks[1]))

    before_after(
        f"WS churn x{plan.ws_cycles:,}: open FDs before -> after",
        "churn_fds_before",
        "churn_fds_after",
        0,
        "flat (+<=2)",
        lambda b, a: a - b <= 2,
    )
    before_after(
        f"WS churn x{plan.ws_cycles:,}: RSS MB before -> after",
        "churn_rss_before",
        "churn_rss_after",
        1,
        "flat (+<=5%)",
        lambda b, a: a <= b * 1.05 + 0.5,
    )
    add("WS churn cycles/s", ("churn", "cycles_per_s"), 0)
    add("WS churn failed cycles", ("churn", "failures"), 0, show_ratio=False)
    add(
        f"Add {nr} routes via API (s)",
        ("route_add_s",),
        2,
        "< CHP",
        lambda h, c: h < c,
    )
    add("req/s, user paths, default route only", ("routes_1", "rps"), 0)
    add(f"req/s, user paths, {nr} routes", ("routes_n", "rps"), 0)
    cells = []
    for m in (chp, him):
        r = ratio(get(m, "routes_n", "rps"), get(m, "routes_1", "rps"))
        cells.append(fmt(r, 2))
    r_him = ratio(get(him, "routes_n", "rps"), get(him, "routes_1", "rps"))
    rows.append(
        Row(
            f"  {nr} routes / default only",
            "-",
            cells[0],
            cells[1],
            "",
            ">= 0.90",
            None if r_him is None else r_him >= 0.90,
        )
    )
    return rows


def render_text(rows: list[Row]) -> str:
    header = ("Metric", "direct", "CHP", "himalia", "him/CHP", "target", "")
    data = [header] + [
        (r.label, r.direct, r.chp, r.himalia, r.ratio, r.target, r.status()) for r in rows
    ]
    widths = [max(len(line[i]) for line in data) for i in range(len(header))]
    out = []
    for n, line in enumerate(data):
        cells = [line[0].ljust(widths[0])] + [
            line[i].rjust(widths[i]) if i < 5 else line[i].ljust(widths[i])
            for i in range(1, len(line))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_markdown(rows: list[Row]) -> str:
    out = [
        "| Metric | direct | CHP | himalia | himalia/CHP | target | |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.label.strip()} | {r.direct} | {r.chp} | {r.himalia} | {r.ratio} | "
            f"{r.target.replace('>=', '≥').replace('<=', '≤')} | {r.status()} |"
        )
    return "\n".join(out)


def ratio_lines(chp: Measures | None, him: Measures | None, why: str) -> list[str]:
    """The two lines the issue asks for."""
    rps = ratio(get(him, "http", "rps"), get(chp, "http", "rps"))
    p99 = ratio(get(him, "http", "p99_ms"), get(chp, "http", "p99_ms"))
    na = f"n/a ({why})" if why else "n/a"
    return [
        f"himalia/chp req/s = {fmt(rps, 2) if rps is not None else na}",
        f"himalia/chp p99 = {fmt(p99, 2) if p99 is not None else na}",
    ]


def machine_description(chp_cli: Path | None, loadgen: str) -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB RAM"
    versions = [f"Python {platform.python_version()}"]
    for mod in ("uvloop", "httptools"):
        with contextlib.suppress(Exception):
            versions.append(f"{mod} {__import__(mod).__version__}")
    if chp_cli is not None:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
        versions.append(
            f"node {node.stdout.strip()}, configurable-http-proxy {chp_version(chp_cli)}"
        )
    if loadgen == "wrk":
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        versions.append((wrk.stdout + wrk.stderr).split("Copyright")[0].strip())
    return [
        f"{cpu}, {os.cpu_count()} CPUs, {mem}, Linux {platform.release()}",
        ", ".join(versions),
    ]


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark Himalia's proxy against configurable-http-proxy on loopback.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    p.add_argument("--connections", type=int, default=50, help="concurrent keep-alive connections")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 s runs, 10 MB transfers, 1,000 churn cycles and routes",
    )
    p.add_argument("--skip-chp", action="store_true", help="do not install or run CHP")
    p.add_argument("--skip-himalia", action="store_true", help="do not run Himalia's proxy")
    p.add_argument("--markdown", metavar="PATH", help="also write the results as markdown here")
    p.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="HTTP load generator: wrk when on PATH, else the Python one",
    )
    p.add_argument(
        "--pin",
        choices=["off", "proxy"],
        default="off",
        help="proxy: the proxy under test on the last CPU, everything else on the others "
        "(halves CHP, whose GC and libuv threads then share its one CPU)",
    )
    p.add_argument("--ws-cycles", type=int, help="websocket churn cycles (default 10,000)")
    p.add_argument("--routes", type=int, help="routes in the big-table run (default 10,000)")
    p.add_argument("--transfer-mb", type=int, help="upload/download size in MB (default 100)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each HTTP load this many times and keep the best (on a busy machine)",
    )
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="after the measurements, sample Himalia's proxy with py-spy during one more "
        "keep-alive run and one more big-table run; raw stacks and a summary go to DIR",
    )
    return p.parse_args(argv)


def cpu_layout(mode: str) -> tuple[set[int] | None, set[int] | None]:
    """(CPUs of the proxy under test, CPUs of everything else), or (None, None) when unpinned."""
    if mode != "proxy" or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="himalia-bench-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    duration = 2.0 if quick else args.duration
    transfer_mb = args.transfer_mb or (10 if quick else 100)
    ws_cycles = args.ws_cycles or (1_000 if quick else 10_000)
    n_routes = args.routes or (1_000 if quick else 10_000)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    if loadgen == "wrk" and not shutil.which("wrk"):
        sys.exit("--loadgen wrk: wrk is not on PATH (apt-get install wrk)")
    profile_dir: Path | None = None
    if args.profile:
        if py_spy() is None:
            sys.exit("--profile needs py-spy (pip install py-spy)")
        profile_dir = Path(args.profile).resolve()
        profile_dir.mkdir(parents=True, exist_ok=True)
    proxy_cpus, other_cpus = cpu_layout(args.pin)
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)  # inherited by the backend and load generators
    layout = (
        f"proxy under test pinned to CPU {sorted(proxy_cpus)}, backend + load generator + "
        f"bench on CPU {sorted(other_cpus)}"
        if proxy_cpus and other_cpus
        else "no CPU pinning"
    )
    log(
        f"load generator: {loadgen} ({'wrk -t1' if loadgen == 'wrk' else 'bench/_loadgen.py'}), "
        f"{args.connections} connections, {duration:g} s runs; {layout}"
    )

    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        log(f"WARNING: load average is {load_before:.2f}; other work on this machine skews results")

    route_paths = [f"/user/u{i:05d}" for i in range(n_routes)]
    step = max(1, n_routes // 1000)
    sample_paths = [f"{p}/api/status" for p in route_paths[::step]][:1000]

    direct: Measures | None = None
    results: dict[str, Measures | None] = {"chp": None, "himalia": None}
    chp_cli: Path | None = None
    chp_why = "skipped with --skip-chp" if args.skip_chp else ""
    errors: list[str] = []

    with workspace() as workdir, contextlib.ExitStack() as stack:
        paths_file = workdir / "paths.txt"
        paths_file.write_text("\n".join(sample_paths) + "\n")
        lua_file = workdir / "paths.lua"
        lua_file.write_text(WRK_SCRIPT % paths_file)
        runner = Runner(
            loadgen,
            args.connections,
            duration,
            1.0 if quick else 2.0,
            workdir,
            paths_file,
            lua_file,
            args.repeat,
        )

        backend_proc = start(
            stack, "backend", [PYTHON, str(HERE / "_backend.py"), "--port", "0"], workdir
        )
        backend_port = int(wait_for_log(backend_proc, re.compile(r"listening on (\d+)"), 30)[1])
        backend_url = f"http://{HOST}:{backend_port}"
        runner.backend_pid = backend_proc.pid
        plan = Plan(
            transfer_mb * MB,
            ws_cycles,
            min(1_000, ws_cycles // 10),
            n_routes,
            route_paths,
            sample_paths,
            backend_url,
        )

        direct = measure_direct(runner, backend_port, plan)

        if not args.skip_chp:
            chp_cli, chp_why = install_chp(workdir)
            if chp_cli is None:
                log(f"SKIPPING configurable-http-proxy: {chp_why}")
            else:
                with contextlib.ExitStack() as chp_stack:
                    try:
                        chp = start_chp(chp_stack, chp_cli, backend_url, workdir, proxy_cpus)
                        results["chp"] = measure_proxy(runner, chp, plan)
                    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                        errors.append(f"chp: {exc}")
                        chp_why = "CHP run failed"
                        log(f"chp run failed: {exc}")
        if not args.skip_himalia:
            with contextlib.ExitStack() as him_stack:
                try:
                    him = start_himalia(him_stack, backend_url, workdir, proxy_cpus)
                    results["himalia"] = measure_proxy(runner, him, plan, profile_dir)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    errors.append(f"himalia: {exc}")
                    log(f"himalia run failed: {exc}")
        machine = machine_description(chp_cli, loadgen)  # before the npm prefix is removed
        if not backend_proc.alive():
            errors.append(f"the backend died during the run:\n{backend_proc.log_tail()}")

    chp_m, him_m = results["chp"], results["himalia"]
    rows = build_rows(direct, chp_m, him_m, plan, args.connections)
    ratios = ratio_lines(chp_m, him_m, chp_why)
    setup = [
        f"load: {loadgen}{' -t1' if loadgen == 'wrk' else ''}, {args.connections} keep-alive "
        f"connections, {duration:g} s per run after a {runner.warmup:g} s warm-up"
        + (f", best of {args.repeat}" if args.repeat > 1 else "")
        + f"; {layout}",
        f"transfers: {transfer_mb} MB; websocket churn: {ws_cycles:,} cycles after "
        f"{plan.ws_warmup_cycles:,} warm-up cycles (half closed cleanly, half dropped); "
        f"route table: {n_routes:,} routes",
    ]
    setup.append(f"1-minute load average before the run: {load_before:.2f}")
    foreign = [
        get(m, run, "foreign_cpu_pct") or 0.0
        for m in (direct, chp_m, him_m)
        for run in ("http", "routes_1", "routes_n")
    ]
    if max(foreign) > 5:
        setup.append(
            f"WARNING: unrelated processes used up to {max(foreign):.0f}% of the CPUs during a "
            "measured run; rerun on a quiet machine (or with --repeat 3)"
        )
    if chp_m is None:
        setup.append(f"configurable-http-proxy not measured: {chp_why or 'failed'}")
    if him_m is None:
        setup.append("himalia proxy not measured")
    if him_m is not None and not him_m.get("hwm_reset", True):
        setup.append("could not reset VmHWM: peak RSS values are lifetime peaks")

    print()
    print(render_text(rows))
    print()
    for line in setup:
        print(line)
    for line in ratios:
        print(line)
    missed = [r.label.strip() for r in rows if r.ok is False]
    if him_m is not None and chp_m is not None:
        print("targets: all met" if not missed else "targets missed: " + "; ".join(missed))
    if profile_dir is not None and him_m is not None:
        summary: list[str] = []
        for key, label in (("profile_http", "http"), ("profile_routes", "routes")):
            raw = profile_dir / f"himalia-{label}.txt"
            if raw.exists():
                rps = fmt(get(him_m, key, "rps"), 0)
                summary += [f"py-spy, {label} run ({rps} req/s while sampled):"]
                summary += [*summarize_profile(raw), ""]
        (profile_dir / "summary.txt").write_text("\n".join(summary))
        print()
        print("\n".join(summary))
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)

    if args.markdown:
        md = Path(args.markdown)
        md.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python bench/proxy_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
        lines = [
            "# Proxy benchmark: Himalia vs configurable-http-proxy",
            "",
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- machine: {machine[0]}",
            f"- software: {machine[1]}",
            f"- command: `{cmd.strip()}`",
            *(f"- {line}" for line in setup),
            "",
            render_markdown(rows),
            "",
            "```",
            *ratios,
            "```",
            "",
        ]
        if missed and him_m is not None and chp_m is not None:
            lines += ["Targets missed: " + "; ".join(missed), ""]
        md.write_text("\n".join(lines))
        log(f"wrote {md}")
    if errors:
        return 2
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
