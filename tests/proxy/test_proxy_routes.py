"""The route table (a segment trie) and target parsing, without sockets."""

from __future__ import annotations

import pytest

from proxy.routes import Route, RouteTable, Target, parse_target


def _route(key: str, target: str = "http://127.0.0.1:1") -> Route:
    return Route(key, parse_target(target), {"target": target}, 0.0)


def _table(*keys: str) -> RouteTable:
    table = RouteTable()
    for key in keys:
        table.add(_route(key))
    return table


def _matched(table: RouteTable, path: str) -> str | None:
    route = table.match(path)
    return None if route is None else route.key


def test_longest_prefix_on_segments() -> None:
    table = _table("/", "/user/alice", "/user/alice/lab", "/user/bob", "/services/x")
    assert _matched(table, "/user/alice") == "/user/alice"
    assert _matched(table, "/user/alice/") == "/user/alice"
    assert _matched(table, "/user/alice/api/contents") == "/user/alice"
    assert _matched(table, "/user/alice/lab/tree") == "/user/alice/lab"
    assert _matched(table, "/user/alicex/") == "/"  # segment boundary, not string prefix
    assert _matched(table, "/user/ali") == "/"
    assert _matched(table, "/user/bob/x") == "/user/bob"
    assert _matched(table, "/hub/login") == "/"
    assert _matched(table, "/") == "/"
    assert _matched(table, "//user/alice") == "/"  # an empty first segment is not "user"
    assert _matched(table, "/user//alice") == "/"


def test_no_default_route_means_no_match() -> None:
    table = _table("/user/alice")
    assert table.match("/hub/") is None
    assert table.match("/user/alice/x") is not None


def test_replace_and_remove_prunes() -> None:
    table = _table("/user/alice", "/user/alice/lab")
    replaced = table.add(_route("/user/alice", "http://127.0.0.1:2"))
    assert replaced is not None and replaced.target.port == 1
    assert len(table) == 2
    assert table.remove("/user/alice") is not None
    assert table.remove("/user/alice") is None
    assert _matched(table, "/user/alice/x") is None
    assert _matched(table, "/user/alice/lab/x") == "/user/alice/lab"
    table.remove("/user/alice/lab")
    assert len(table) == 0
    assert table._root.children == {}  # every node pruned


def test_remove_keeps_shared_parents() -> None:
    table = _table("/user/alice", "/user/bob")
    table.remove("/user/alice")
    assert _matched(table, "/user/bob/tree") == "/user/bob"
    assert "user" in table._root.children


def test_iteration_and_get() -> None:
    table = _table("/a", "/b/c")
    assert sorted(r.key for r in table) == ["/a", "/b/c"]
    assert table.get("/b/c") is not None and table.get("/b") is None
    assert "/a" in table and "/b" not in table


def test_many_routes_each_match_their_own() -> None:
    # speed is measured by bench/proxy_store_bench.py, not asserted here
    table = RouteTable()
    for i in range(10_000):
        table.add(_route(f"/user/u{i}"))
    for i in range(10_000):
        assert _matched(table, f"/user/u{i}/api/kernels") == f"/user/u{i}"
    assert _matched(table, "/user/u10000/api") is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8888", Target("http://127.0.0.1:8888", "http", "127.0.0.1", 8888)),
        ("http://host", Target("http://host", "http", "host", 80)),
        ("https://host/", Target("https://host/", "https", "host", 443)),
        ("http://[::1]:9/", Target("http://[::1]:9/", "http", "::1", 9)),
        ("http://h:1/pre/fix/", Target("http://h:1/pre/fix/", "http", "h", 1, b"/pre/fix")),
        (
            "unix+http://%2Ftmp%2Fs.sock",
            Target("unix+http://%2Ftmp%2Fs.sock", "unix", "/tmp/s.sock", 0),
        ),
    ],
)
def test_parse_target(url: str, expected: Target) -> None:
    assert parse_target(url) == expected


@pytest.mark.parametrize(
    "url",
    ["", "ftp://h", "http://", "http://user:pw@h", "http://h:99999", "http://h/?q=1",
     "http://h/a b", "unix+http://relative", None, 42],
)
def test_bad_targets(url: object) -> None:
    with pytest.raises(ValueError):
        parse_target(url)


def test_authority_for_missing_host_header() -> None:
    assert parse_target("http://[::1]:9").authority == b"[::1]:9"
    assert parse_target("http://h").authority == b"h:80"
