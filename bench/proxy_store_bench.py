"""Benchmark the proxy's route store in-process: adds with the journal, replay, and matching.

The proxy keeps every route in a segment trie (``proxy.routes.RouteTable``) behind a
``proxy.store.RouteStore`` that appends each change to its journal (the routes file). This
measures, for ``--routes`` routes (10,000 by default, like the hub's user benchmark):

* ``add``: ``RouteStore.add`` of every route with the journal on (a file in a temporary
  directory), as the REST API calls it;
* ``load``: replaying that journal into a fresh store at start-up (compaction included);
* ``match``: one longest-prefix match per route of a path below it
  (``/user/u<i>/api/kernels``), as the data path does per request.

Each figure is the best of ``--repeat`` runs, in CPU seconds of this process (other work on
the machine disturbs it less than wall time) with the wall time beside it. For comparison:
configurable-http-proxy needs about 2.3 s to take 10,000 routes over its REST API, and the old
unit-test budgets were 1.0 s CPU for the adds and 0.5 s CPU for the matches.

Usage::

    .venv/bin/python bench/proxy_store_bench.py                  # ~2 s
    .venv/bin/python bench/proxy_store_bench.py --routes 100000 --repeat 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.journal import RouteJournal
from proxy.store import RouteStore


@dataclass
class Timing:
    """CPU and wall seconds of one measured step."""

    cpu: float
    wall: float


def _measure(step: Callable[[], None]) -> Timing:
    cpu, wall = time.process_time(), time.perf_counter()
    step()
    return Timing(time.process_time() - cpu, time.perf_counter() - wall)


def _data(i: int) -> dict[str, object]:
    return {"target": f"http://127.0.0.1:{1024 + i % 60000}", "user": f"u{i}"}


def run_once(routes: int, workdir: Path) -> dict[str, Timing]:
    """One run of the three steps in a fresh journal file under ``workdir``."""
    path = workdir / "routes.jsonl"
    path.unlink(missing_ok=True)
    journal = RouteJournal(path)
    store = RouteStore(journal)
    store.load()

    def add() -> None:
        for i in range(routes):
            store.add(f"/user/u{i}", _data(i))

    timings = {"add": _measure(add)}
    journal.close()

    again = RouteStore(RouteJournal(path))

    def load() -> None:
        assert again.load() == routes

    timings["load"] = _measure(load)

    def match() -> None:
        for i in range(routes):
            route = again.match(f"/user/u{i}/api/kernels")
            assert route is not None and route.key == f"/user/u{i}"

    timings["match"] = _measure(match)
    assert again.journal is not None
    again.journal.close()
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000, help="routes to add (10000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is kept (3)")
    args = parser.parse_args(argv)
    best: dict[str, Timing] = {}
    with tempfile.TemporaryDirectory(prefix="himalia-store-bench-") as tmp:
        for _ in range(args.repeat):
            for name, timing in run_once(args.routes, Path(tmp)).items():
                if name not in best or timing.cpu < best[name].cpu:
                    best[name] = timing
    print(f"proxy route store, {args.routes:,} routes, best of {args.repeat}")
    print(f"{'step':<6} {'cpu s':>8} {'wall s':>8} {'µs/route':>9}")
    for name, timing in best.items():
        per_route = timing.cpu / args.routes * 1e6
        print(f"{name:<6} {timing.cpu:>8.3f} {timing.wall:>8.3f} {per_route:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
