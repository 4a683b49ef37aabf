"""Benchmark the hub's REST API with 10,000 users: the paginated list and a single user.

One run starts a fresh hub (``python -m hub`` in a temporary data directory, SQLite, INFO
logging as in production, ephemeral ports), creates the users through the API
(``POST /hub/api/users`` in batches of ``--batch``; the bulk call a roster script would use),
mints an admin token with ``himalia token``, then measures, each for ``--duration`` seconds
after a short warm-up, with ``--connections`` keep-alive clients each sending its next request as
soon as the previous answer ended:

* ``list``: ``GET /hub/api/users?limit=200&offset=<random>`` with
  ``Accept: application/jupyterhub-pagination+json`` (the envelope with its ``total``);
* ``single``: ``GET /hub/api/users/<random user>``;

reporting req/s, p50/p99 latency, errors, and the hub's RSS (and peak RSS) afterwards. It
compares with JupyterHub 6.1.1's reference figures (1,000 users, this kind of machine: list
~45 req/s at p50 ~200 ms, single user ~200 req/s at p50 ~50 ms) and checks the targets
(list >= 10x, single >= 5x).

Requests go to the hub's own port (``--via-proxy`` sends them through the proxy instead). On a
machine with 2+ CPUs the hub is pinned to the last CPU and this script (the load generator) to
the others, so the two do not fight over one core. ``--profile DIR`` records each scenario
with ``py-spy`` (when installed) into ``DIR/<scenario>.txt`` (collapsed stacks, hottest first).

Usage::

    .venv/bin/python bench/api_bench.py                          # ~1 minute
    .venv/bin/python bench/api_bench.py --markdown bench/results/api.md
    .venv/bin/python bench/api_bench.py --users 1000 --duration 5 --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = sys.executable
LISTEN_RE = re.compile(r"himalia: hub listening on (\S+), public URL (\S+)")
PAGINATED = "application/jupyterhub-pagination+json"

#: JupyterHub 6.1.1 with 1,000 users on this kind of machine (the issue's reference figures).
REFERENCE = {"list": {"rps": 45.0, "p50_ms": 200.0}, "single": {"rps": 200.0, "p50_ms": 50.0}}
#: Required speed-up over the reference, per scenario.
TARGET_FACTOR = {"list": 10.0, "single": 5.0}


def log(msg: str) -> None:
    """Progress output on stderr (stdout stays the report)."""
    sys.stderr.write(f"[api-bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# -- the hub under test -----------------------------------------------------------------------


@dataclass
class Hub:
    """A hub process started for the benchmark; its output goes to a file.

    A file, not a pipe: a pipe drained by a thread of this (busy) process fills up, and the
    hub's access-log writes would then block the hub.
    """

    data_dir: Path
    via_proxy: bool = False
    proc: subprocess.Popen[bytes] | None = None
    hub_url: str = ""
    public_url: str = ""

    @property
    def log_file(self) -> Path:
        return self.data_dir / "hub.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIMALIA_")}
        env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def start(self, timeout: float = 60.0) -> None:
        argv = [PYTHON, "-m", "hub", "--data-dir", str(self.data_dir), "--port", "0",
                "--hub-port", "0", "--proxy-api-port", "0", "--log-level", "INFO"]
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=self.env(), stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = LISTEN_RE.search(self.log_file.read_text(errors="replace"))
            if m:
                self.hub_url, self.public_url = m.group(1), m.group(2)
                return
            time.sleep(0.1)
        self.stop()
        tail = self.log_file.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError("the hub did not start:\n" + "\n".join(tail))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def api(self) -> str:
        """``http://host:port/hub/api`` — the hub's own port, or the proxy's."""
        return (self.public_url.rstrip("/") if self.via_proxy else self.hub_url) + "/hub/api"

    def token(self) -> str:
        done = subprocess.run([PYTHON, "-m", "hub", "token", "admin", "--note", "api-bench",
                               "--data-dir", str(self.data_dir)], cwd=REPO, env=self.env(),
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()

    def proxy_pid(self) -> int | None:
        try:
            return int(json.loads((self.data_dir / "proxy.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        """Stop the hub, then the proxy it started (by recorded PID)."""
        proxy = self.proxy_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if proxy is not None:
            try:
                os.kill(proxy, signal.SIGTERM)
            except ProcessLookupError:
                pass


def rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of ``pid``, in MiB (from ``/proc``)."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` (from ``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cpus)


# -- set-up through the API -------------------------------------------------------------------


def call(method: str, url: str, token: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read() or b"null")


def create_users(api: str, token: str, count: int, batch: int) -> tuple[list[str], float]:
    """``count`` users ``bench-00001``… through ``POST /users``; returns names and seconds."""
    names = [f"bench-{i:05d}" for i in range(1, count + 1)]
    start = time.perf_counter()
    for i in range(0, count, batch):
        created = call("POST", api + "/users", token, {"usernames": names[i:i + batch]})
        assert len(created) == len(names[i:i + batch])
    return names, time.perf_counter() - start


# -- load -------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


class _Response:
    """httptools callbacks: completion, status and body size of one response."""

    def __init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.parser = httptools.HttpResponseParser(self)
        self.size = 0
        self.status = 0
        self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self.size += len(body)

    def on_message_complete(self) -> None:
        # Read here: the parser resets its state once the message is complete.
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        if not self.done.done():
            self.done.set_result(None)


async def _client(host: str, port: int, requests: Sequence[bytes], deadline: float,
                  stats: dict[str, Any], rng: random.Random) -> None:
    """One keep-alive connection sending random requests back to back until ``deadline``."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            resp = _Response()
            sent = time.perf_counter()
            writer.write(rng.choice(requests))
            while not resp.done.done():
                chunk = await reader.read(256 * 1024)
                if not chunk:
                    raise ConnectionError("the hub closed the connection")
                resp.parser.feed_data(chunk)
            stats["latencies"].append(time.perf_counter() - sent)
            stats["bytes"] += resp.size
            if resp.status != 200:
                stats["non_200"] += 1
            if not resp.keep_alive:
                raise ConnectionError("the hub ended keep-alive")
    finally:
        writer.close()


async def load(url: str, paths: Sequence[str], headers: dict[str, str], connections: int,
               duration: float, seed: int) -> dict[str, Any]:
    """Drive ``connections`` clients for ``duration`` seconds; req/s and latency."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode() for p in paths]
    stats: dict[str, Any] = {"latencies": [], "bytes": 0, "non_200": 0}
    start = time.perf_counter()
    results = await asyncio.gather(
        *(_client(host, port, requests, start + duration, stats, random.Random(seed + i))
          for i in range(connections)), return_exceptions=True)
    elapsed = time.perf_counter() - start
    lat = sorted(stats["latencies"])
    return {
        "requests": len(lat), "rps": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
        "non_200": stats["non_200"], "errors": sum(isinstance(r, Exception) for r in results),
        "mb_per_s": stats["bytes"] / elapsed / 1e6,
        "error_sample": [repr(r) for r in results if isinstance(r, Exception)][:2],
    }


def scenario_paths(api_path: str, kind: str, names: Sequence[str], limit: int,
                   seed: int) -> list[str]:
    """Request targets for a scenario: random offsets, or random users."""
    rng = random.Random(seed)
    if kind == "floor":
        return [f"{api_path}/"]
    if kind == "list":
        top = max(0, len(names) - limit)
        return [f"{api_path}/users?limit={limit}&offset={rng.randint(0, top)}"
                for _ in range(2000)]
    return [f"{api_path}/users/{quote(rng.choice(names), safe='')}" for _ in range(5000)]


def check_answers(api: str, token: str, names: Sequence[str], limit: int) -> None:
    """The scenarios' requests answer what they should (one of each)."""
    req = urllib.request.Request(f"{api}/users?limit={limit}&offset=0", headers={
        "Authorization": f"token {token}", "Accept": PAGINATED})
    with urllib.request.urlopen(req, timeout=60) as r:
        page = json.loads(r.read())
    expected = min(limit, len(names) + 1)  # + the admin
    assert len(page["items"]) == expected, page["_pagination"]
    assert page["_pagination"]["total"] == len(names) + 1, page["_pagination"]
    one = call("GET", f"{api}/users/{names[0]}", token)
    assert one["name"] == names[0] and "servers" in one, one


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` on the hub for ``seconds`` (None when py-spy is missing)."""
    exe = shutil.which("py-spy", path=f"{Path(PYTHON).parent}:{os.environ.get('PATH', '')}")
    if exe is None:
        log("py-spy not found: no profile")
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "250", "--format", "raw", "--output", str(out),
                             "--nonblocking"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def summarize_profile(raw: Path, top: int = 40) -> None:
    """Rewrite py-spy's collapsed stacks hottest-first, with self and total sample counts."""
    if not raw.exists():
        return
    total: dict[str, int] = {}
    own: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = stack.split(";")
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    lines = [f"# {samples} samples; self% total% frame"]
    for frame, n in sorted(total.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * own.get(frame, 0) / samples:5.1f} {100 * n / samples:5.1f} {frame}")
    raw.with_suffix(".top.txt").write_text("\n".join(lines) + "\n")


# -- report -----------------------------------------------------------------------------------


def markdown(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    rows = []
    for kind, r in results.items():
        if kind not in REFERENCE:
            rows.append(f"| {kind} (`GET /hub/api/`) | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
                        f"{r['p99_ms']:.1f} | {r['cpu_ms']:.2f} | {r['non_200'] + r['errors']} "
                        "| | | |")
            continue
        ref = REFERENCE[kind]
        target = ref["rps"] * TARGET_FACTOR[kind]
        ok = "yes" if r["rps"] >= target and not r["errors"] and not r["non_200"] else "NO"
        rows.append(f"| {kind} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                    f"{r['cpu_ms']:.2f} | "
                    f"{r['non_200'] + r['errors']} | {r['rps'] / ref['rps']:.1f}× "
                    f"({ref['rps']:.0f} req/s, p50 {ref['p50_ms']:.0f} ms) | "
                    f"≥ {target:.0f} req/s | {ok} |")
    return "\n".join([
        "# REST API benchmark",
        "",
        f"{meta['users']:,} users, {meta['connections']} keep-alive clients, "
        f"{meta['duration']:g} s per scenario after a warm-up, requests to the "
        f"{'proxy' if meta['via_proxy'] else 'hub port directly'}. Produced by "
        "`bench/api_bench.py`.",
        "",
        "- `list`: `GET /hub/api/users?limit=200&offset=<random>` with "
        "`Accept: application/jupyterhub-pagination+json`",
        "- `single`: `GET /hub/api/users/<random user>`",
        "",
        "| scenario | req/s | p50 ms | p99 ms | hub CPU ms/req | errors "
        "| vs JupyterHub 6.1.1 (1,000 users) | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- users created through `POST /hub/api/users` in batches of {meta['batch']}: "
        f"{meta['create_s']:.1f} s",
        f"- hub RSS: {meta['rss_start']:.0f} MiB after start-up, {meta['rss_users']:.0f} MiB "
        f"with the users, {meta['rss_end']:.0f} MiB after the runs (peak {meta['rss_peak']:.0f}"
        " MiB)",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}, {meta['cpus']} CPUs, Python {meta['python']}; hub pinned "
        f"to CPU {meta['hub_cpu']}",
        f"- 1-minute load average before/after: {meta['load_before']:.1f} / "
        f"{meta['load_after']:.1f} (other work on the machine lowers the figures)",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1000, help="users per POST /users call")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per scenario")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--via-proxy", action="store_true")
    ap.add_argument("--profile", type=Path, help="directory for py-spy profiles")
    ap.add_argument("--markdown", type=Path, help="write the report here too")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenarios", nargs="+", default=["list", "single"],
                    choices=["list", "single", "floor"],
                    help="floor: GET /hub/api/ (no database), the cost of the HTTP stack alone")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        hub = Hub(Path(tmp), via_proxy=args.via_proxy)
        hub.start()
        try:
            return run(hub, args, load_before)
        finally:
            hub.stop()


def run(hub: Hub, args: argparse.Namespace, load_before: float) -> int:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    hub_cpu = cpus[-1]
    if len(cpus) > 1:
        pin(hub.pid, {hub_cpu})
        pin(0, set(cpus[:-1]))
    token = hub.token()
    rss_start = rss_mb(hub.pid)[0]
    log(f"hub pid {hub.pid} at {hub.api}; creating {args.users:,} users")
    names, create_s = create_users(hub.api, token, args.users, args.batch)
    rss_users = rss_mb(hub.pid)[0]
    log(f"created in {create_s:.1f} s; RSS {rss_users:.0f} MiB")
    check_answers(hub.api, token, names, args.limit)
    api_path = urlsplit(hub.api).path
    headers = {"Authorization": f"token {token}", "Accept": PAGINATED}
    results: dict[str, dict[str, Any]] = {}
    for kind in args.scenarios:
        paths = scenario_paths(api_path, kind, names, args.limit, args.seed)
        asyncio.run(load(hub.api, paths, headers, args.connections, args.warmup, args.seed))
        spy = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            spy = profile(hub.pid, args.duration, args.profile / f"{kind}.txt")
        cpu_before = cpu_seconds(hub.pid)
        results[kind] = r = asyncio.run(load(hub.api, paths, headers, args.connections,
                                             args.duration, args.seed + 100))
        # CPU per request: unlike req/s, barely affected by other work on the machine.
        r["cpu_ms"] = 1e3 * (cpu_seconds(hub.pid) - cpu_before) / max(1, r["requests"])
        if spy is not None:
            spy.wait(60)
            summarize_profile(args.profile / f"{kind}.txt")
        log(f"{kind}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
            f"hub CPU {r['cpu_ms']:.2f} ms/request, "
            f"{r['non_200']} non-200, {r['errors']} errors {r['error_sample']}, "
            f"{r['mb_per_s']:.1f} MB/s")
    rss_end, rss_peak = rss_mb(hub.pid)
    meta = {
        "users": args.users, "connections": args.connections, "duration": args.duration,
        "via_proxy": args.via_proxy, "batch": args.batch, "create_s": create_s,
        "rss_start": rss_start, "rss_users": rss_users, "rss_end": rss_end,
        "rss_peak": rss_peak, "machine": platform.platform(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "hub_cpu": hub_cpu,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }
    report = markdown(results, meta)
    print(report)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
    met = all(r["rps"] >= REFERENCE[k]["rps"] * TARGET_FACTOR[k] and not r["errors"]
              and not r["non_200"] for k, r in results.items() if k in REFERENCE)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
