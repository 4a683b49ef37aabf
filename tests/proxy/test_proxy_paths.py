"""Path canonicalisation: what routes where, and what is refused (SECURITY.md item 6)."""

from __future__ import annotations

import pytest

from proxy.paths import BadPath, canonical_host, canonical_key, canonical_path


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/", "/"),
        ("/user/alice/", "/user/alice/"),
        ("/user/alice/api/contents", "/user/alice/api/contents"),
        ("/%75ser/%61lice", "/user/alice"),  # unreserved escapes decode
        ("/user/al%7eice", "/user/al~ice"),
        ("/user/a%2fb", "/user/a%2Fb"),  # %2F stays data, hex upper-cased
        ("/user/a%5cb", "/user/a%5Cb"),
        ("/user/a%20b", "/user/a%20b"),
        ("/user/alice/a..b/.hidden/...", "/user/alice/a..b/.hidden/..."),
        ("//user/alice", "//user/alice"),  # empty segments are kept
        ("/user/alice%2F..%2Fbob", "/user/alice%2F..%2Fbob"),
    ],
)
def test_accepted_paths(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "/user/bob/../alice/",
        "/user/bob/..",
        "/user/./alice",
        "/user/bob/%2e%2e/alice",
        "/user/bob/%2E%2e/alice",
        "/user/bob/.%2E/alice",
        "/user/bob/%2e./alice",
        "/user/bob/%2e/alice",
        "/user/bob\\..\\alice",
        "/user\\alice",
        "/user/alice%",
        "/user/alice%2",
        "/user/%zzalice",
        "/user/%g1",
        "/user/al%00ice",
        "/user/alice#frag",
        "user/alice",
        "*",
        "http://evil/user/alice",
        "",
    ],
)
def test_refused_paths(raw: str) -> None:
    with pytest.raises(BadPath):
        canonical_path(raw)


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("/user/alice", "/user/alice"),
        ("/user/alice/", "/user/alice"),
        ("user/alice", "/user/alice"),
        ("/", "/"),
        ("", "/"),
        ("/user/%61lice/", "/user/alice"),
        ("/user/ali%20ce", "/user/ali%20ce"),
    ],
)
def test_route_keys(key: str, canonical: str) -> None:
    assert canonical_key(key) == canonical


@pytest.mark.parametrize("key", ["/user/../alice", "/user/alice?x=1", "/a\\b", "/a%"])
def test_refused_route_keys(key: str) -> None:
    with pytest.raises(BadPath):
        canonical_key(key)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Alice.Example.org", "alice.example.org"),
        ("alice.example.org:8443", "alice.example.org"),
        ("[::1]:8000", "[::1]"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_hosts(host: str, name: str) -> None:
    assert canonical_host(host) == name


@pytest.mark.parametrize("host", ["", "a/b", "a b", "evil.org/../x", "a:b:c", "[zz]"])
def test_refused_hosts(host: str) -> None:
    with pytest.raises(BadPath):
        canonical_host(host)
