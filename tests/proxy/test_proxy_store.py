"""The route store and its journal (the routes file), without sockets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.journal import JournalError, RouteJournal
from proxy.store import RouteStore, format_iso, parse_iso


class FakeClock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def _store(clock: FakeClock, journal: RouteJournal | None = None) -> RouteStore:
    return RouteStore(journal, clock=lambda: clock.mono, wall=lambda: clock.wall)


def test_keys_are_canonical_in_every_call() -> None:
    store = _store(FakeClock())
    store.add("/user/alice/", {"target": "http://127.0.0.1:1", "user": "alice"})
    assert store.get("/user/alice") is store.get("user/alice/")
    assert store.match("/user/alice/tree").key == "/user/alice"  # type: ignore[union-attr]
    assert store.remove("/user/alice/")
    assert not store.remove("/user/alice")


def test_bad_input_is_a_value_error() -> None:
    store = _store(FakeClock())
    with pytest.raises(ValueError):
        store.add("/user/../x", {"target": "http://h"})
    with pytest.raises(ValueError):
        store.add("/x", {"target": "gopher://h"})
    with pytest.raises(ValueError):
        store.add("/x", {})
    assert len(store) == 0


def test_model_and_activity() -> None:
    clock = FakeClock()
    store = _store(clock)
    route = store.add("/user/a", {"target": "http://h:1", "jupyterhub": True,
                                  "last_activity": "ignored"})
    clock.advance(60)
    model = store.model(route)
    assert model["target"] == "http://h:1" and model["jupyterhub"] is True
    assert model["last_activity"] == format_iso(clock.wall - 60)
    assert model["last_activity"].endswith("Z")
    route.last_activity = clock.mono  # traffic
    assert store.model(route)["last_activity"] == format_iso(clock.wall)


def test_inactive_since_filter() -> None:
    clock = FakeClock()
    store = _store(clock)
    store.add("/idle", {"target": "http://h:1"})
    clock.advance(3600)
    store.add("/busy", {"target": "http://h:1"})
    cutoff = datetime.fromtimestamp(clock.wall - 60, UTC)
    assert list(store.models(cutoff)) == ["/idle"]
    assert sorted(store.models()) == ["/busy", "/idle"]


def test_iso_formats() -> None:
    assert format_iso(0.5) == "1970-01-01T00:00:00.500Z"
    assert parse_iso("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_iso("2024-01-02T03:04:05.123+00:00").microsecond == 123000
    assert parse_iso("2024-01-02T03:04:05").tzinfo is UTC
    with pytest.raises(ValueError):
        parse_iso("yesterday")


def test_journal_replays_changes(tmp_path: Path) -> None:
    path = tmp_path / "routes.jsonl"
    journal = RouteJournal(path)
    store = _store(FakeClock(), journal)
    store.load()
    store.add("/user/a", {"target": "http://h:1", "user": "a"})
    store.add("/user/b", {"target": "http://h:2"})
    store.add("/user/a", {"target": "http://h:3", "user": "a"})
    store.remove("/user/b")
    # written before close: what a kill -9 would leave behind
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert records[0] == {"himalia-routes": 1}
    assert {"del": "/user/b"} in records
    journal.close()

    again = _store(FakeClock(), RouteJournal(path))
    assert again.load() == 1
    assert again.get("/user/a").data == {"target": "http://h:3", "user": "a"}  # type: ignore[union-attr]
    # loading compacts the file to one record per route
    assert len(path.read_bytes().splitlines()) == 2
    assert again.journal is not None
    again.journal.close()


def test_torn_and_invalid_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "routes.jsonl"
    path.write_bytes(
        b'{"himalia-routes": 1}\n'
        b'{"add": "/a", "data": {"target": "http://h:1"}}\n'
        b'not json\n'
        b'{"add": "/bad", "data": {"target": "ftp://nope"}}\n'
        b'{"add": "/b", "data": {"target": "http://h:2"}}\n'
        b'{"add": "/c", "data": {"tar'
    )
    store = _store(FakeClock(), RouteJournal(path))
    assert store.load() == 2
    assert sorted(r.key for r in store.table) == ["/a", "/b"]
    assert store.journal is not None
    store.journal.close()


def test_unknown_version_refuses(tmp_path: Path) -> None:
    path = tmp_path / "routes.jsonl"
    path.write_text('{"himalia-routes": 99}\n')
    with pytest.raises(JournalError):
        RouteJournal(path).load()


def test_one_journal_per_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.jsonl"
    first = RouteJournal(path)
    first.load()
    with pytest.raises(JournalError, match="in use"):
        RouteJournal(path).load()
    first.close()
    second = RouteJournal(path)
    second.load()
    second.close()


def test_compaction_bounds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.jsonl"
    journal = RouteJournal(path)
    store = _store(FakeClock(), journal)
    store.load()
    for i in range(3000):
        store.add("/user/churn", {"target": f"http://h:{1 + i % 60000}"})
    assert len(path.read_bytes().splitlines()) < 1100
    journal.close()
    again = _store(FakeClock(), RouteJournal(path))
    assert again.load() == 1
    assert again.get("/user/churn").target.port == 3000  # type: ignore[union-attr]
    assert again.journal is not None
    again.journal.close()


def test_ten_thousand_adds_are_all_kept(tmp_path: Path) -> None:
    # speed is measured by bench/proxy_store_bench.py, not asserted here
    journal = RouteJournal(tmp_path / "routes.jsonl")
    store = _store(FakeClock(), journal)
    store.load()
    for i in range(10_000):
        store.add(f"/user/u{i}", {"target": f"http://127.0.0.1:{1024 + i}", "user": f"u{i}"})
    journal.close()
    assert len(store) == 10_000
    again = _store(FakeClock(), RouteJournal(tmp_path / "routes.jsonl"))
    assert again.load() == 10_000
    for i in (0, 4_999, 9_999):
        route = again.match(f"/user/u{i}/tree")
        assert route is not None and route.key == f"/user/u{i}"
        assert route.data == {"target": f"http://127.0.0.1:{1024 + i}", "user": f"u{i}"}
    assert again.journal is not None
    again.journal.close()


def test_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "routes.jsonl"
    journal = RouteJournal(path)
    journal.load()
    journal.close()
    assert path.stat().st_mode & 0o077 == 0
