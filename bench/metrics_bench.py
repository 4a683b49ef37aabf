"""What metrics cost: the proxy's throughput with metrics on vs off, and a ``/hub/metrics``
scrape at 10,000 users.

**Proxy.** Starts the fast backend (``bench/_backend.py``) and two ``python -m proxy``
processes in front of it, one as shipped (metrics on) and one with ``--no-metrics``; then runs
the HTTP keep-alive load (``wrk -t1`` when on PATH, else ``bench/_loadgen.py``) against each
at the same time (two load generators), for ``--rounds`` rounds: outside load then hits both
alike, so the ratio of one round is a fair comparison even on a busy machine. It reports the
median req/s and requests per proxy CPU-second of each, the median of the rounds' on/off
ratios, and checks the target: metrics on within 5 % of off. At the end it scrapes the
metrics proxy's ``GET /metrics`` to show the counters counted.

**Hub.** Builds a SQLite database of ``--users`` users (a third active in the last day) in a
temporary directory, and times :meth:`hub.services.metrics.HubMetrics.render` — one aggregate
query plus the histograms — best and median of 50 scrapes (target ≤ 20 ms).

Usage::

    .venv/bin/python bench/metrics_bench.py                   # ~2 minutes
    .venv/bin/python bench/metrics_bench.py --rounds 2 --duration 3   # quick
    .venv/bin/python bench/metrics_bench.py --markdown bench/results/metrics.md

Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import os
import platform
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import proxy_bench as pb  # noqa: E402  (the proxy bench's process and load helpers)


def start_proxy(stack: contextlib.ExitStack, name: str, backend: str, workdir: Path,
                *extra: str) -> pb.Target:
    token = secrets.token_hex(16)
    argv = [pb.PYTHON, "-m", "proxy", "--ip", pb.HOST, "--port", "0", "--api-ip", pb.HOST,
            "--api-port", "0", "--default-target", backend, "--log-level", "warning", *extra]
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=token)
    proc = pb.start(stack, name, argv, workdir, env=env)
    match = pb.wait_for_log(proc, pb.LISTEN_RE, 30)
    return pb.Target(name, int(match.group(1)), int(match.group(2)), proc, token)


def scrape(target: pb.Target) -> str:
    assert target.api_port is not None
    conn = http.client.HTTPConnection(pb.HOST, target.api_port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"token {target.token}"})
        response = conn.getresponse()
        return response.read().decode()
    finally:
        conn.close()


def _load(runner: pb.Runner, target: pb.Target) -> pb.Measures:
    """One warmed-up load run against ``target``, with its requests per proxy CPU-second."""
    assert target.proc is not None
    runner._http(target.port, False, runner.warmup)
    meter = pb.CpuMeter(target.proc.pid, None)
    result = runner._http(target.port, False, runner.duration)
    result.update(meter.stop())
    result["bad"] = result["errors"] + result["non_2xx"]
    cpu = result["proxy_cpu_s"]
    result["req_per_cpu_s"] = result["requests"] / cpu if cpu > 0 else 0.0
    return result


def proxy_part(args: argparse.Namespace) -> list[str]:
    loadgen = "wrk" if shutil.which("wrk") else "python"
    rows: list[str] = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        backend = pb.start(stack, "backend", [pb.PYTHON, str(HERE / "_backend.py"), "--port",
                                              "0"], workdir)
        port = int(pb.wait_for_log(backend, re.compile(r"listening on (\d+)"), 30)[1])
        url = f"http://{pb.HOST}:{port}"
        on = start_proxy(stack, "metrics-on", url, workdir)
        off = start_proxy(stack, "metrics-off", url, workdir, "--no-metrics")
        runner = pb.Runner(loadgen, args.connections, args.duration, args.warmup, workdir,
                           backend_pid=backend.pid)
        results: dict[str, list[pb.Measures]] = {"metrics-on": [], "metrics-off": []}
        with ThreadPoolExecutor(2) as pool:
            for round_no in range(args.rounds):
                pb.log(f"round {round_no + 1}/{args.rounds}: both proxies under load at once")
                order = (on, off) if round_no % 2 == 0 else (off, on)  # who starts first
                for target, result in zip(order, pool.map(
                        lambda t: _load(runner, t), order), strict=True):
                    results[target.name].append(result)
        text = scrape(on)
    rps = {k: statistics.median(m["rps"] for m in v) for k, v in results.items()}
    cpu = {k: statistics.median(m["req_per_cpu_s"] for m in v) for k, v in results.items()}
    bad = {k: sum(m["bad"] for m in v) for k, v in results.items()}
    pairs = list(zip(results["metrics-off"], results["metrics-on"], strict=True))
    # The ratio of each round (both proxies under the same load at the same moment), then the
    # median: outside load comes and goes, but it hits both sides of a round alike.
    rps_ratio = statistics.median(b["rps"] / a["rps"] for a, b in pairs)
    cpu_ratio = statistics.median(b["req_per_cpu_s"] / a["req_per_cpu_s"] for a, b in pairs
                                  if a["req_per_cpu_s"])
    rows += [
        f"Proxy, {args.connections} keep-alive connections, {loadgen} load, "
        f"{args.rounds} rounds of {args.duration:g} s, both proxies loaded at once in each "
        "(medians; on/off is the median of the rounds' ratios):",
        "",
        "| Metric | metrics off | metrics on | on/off | target | |",
        "|---|---:|---:|---:|---|---|",
        f"| HTTP req/s | {rps['metrics-off']:,.0f} | {rps['metrics-on']:,.0f} | "
        f"{rps_ratio:.3f} | ≥ 0.95 | {_verdict(rps_ratio)} |",
        f"| requests per proxy CPU-second | {cpu['metrics-off']:,.0f} | "
        f"{cpu['metrics-on']:,.0f} | {cpu_ratio:.3f} | ≥ 0.95 | {_verdict(cpu_ratio)} |",
        f"| socket errors + non-2xx | {bad['metrics-off']} | {bad['metrics-on']} | | | |",
        "",
        "Per round (req/s, off / on): " + ", ".join(
            f"{a['rps']:,.0f} / {b['rps']:,.0f}"
            for a, b in pairs),
        "",
    ]
    counted = re.search(r'^himalia_proxy_requests_total\{code="2xx"\} (\S+)$', text, re.M)
    rows.append(f"`GET /metrics` of the metrics-on proxy afterwards: "
                f"himalia_proxy_requests_total{{code=\"2xx\"}} = "
                f"{counted.group(1) if counted else '?'}")
    return rows


def _verdict(ratio: float) -> str:
    return "PASS" if ratio >= 0.95 else "FAIL"


def hub_part(args: argparse.Namespace) -> list[str]:
    from sqlalchemy import insert

    from hub.db.database import make_engine, make_sessionmaker, upgrade
    from hub.db.models import User, utcnow
    from hub.services.metrics import HubMetrics

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/hub.sqlite")
        upgrade(engine, backup=False)
        now = utcnow()
        rows = [{"name": f"user{i:05d}", "admin": False, "created": now,
                 "last_activity": now - dt.timedelta(hours=(i % 3) * 20)}
                for i in range(args.users)]
        with engine.begin() as conn:
            conn.execute(insert(User), rows)
        metrics = HubMetrics()
        metrics.watch(make_sessionmaker(engine), lambda: 100)
        for _ in range(5):  # warm the connection pool and SQLite's page cache
            metrics.render()
        times = []
        for _ in range(50):
            began = time.perf_counter()
            body = metrics.render()
            times.append((time.perf_counter() - began) * 1000)
        engine.dispose()
    best, median = min(times), statistics.median(times)
    verdict = "PASS" if median <= 20 else "FAIL"
    return [
        f"Hub, `/hub/metrics` body at {args.users:,} users (SQLite; {len(body):,} bytes):",
        "",
        "| Metric | best | median | target | |",
        "|---|---:|---:|---|---|",
        f"| render time (ms) | {best:.2f} | {median:.2f} | ≤ 20 | {verdict} |",
        "",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=6, help="rounds, both proxies loaded at once")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per load run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--users", type=int, default=10_000, help="users in the hub's database")
    p.add_argument("--skip-proxy", action="store_true")
    p.add_argument("--skip-hub", action="store_true")
    p.add_argument("--markdown", type=Path, help="also write the report to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Run of {started} on {platform.node()} ({os.cpu_count()} CPUs):", ""]
    if not args.skip_hub:
        lines += hub_part(args)
    if not args.skip_proxy:
        lines += proxy_part(args)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
