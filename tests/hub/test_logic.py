"""Pure logic of the hub, tested without sockets: names, next URLs, scopes, throttling."""

from __future__ import annotations

import pytest

from hub.services import names
from hub.services import scopes as sc
from hub.services.throttle import LoginThrottle


@pytest.mark.parametrize("raw,clean", [("Alice", "alice"), ("  bob ", "bob"),
                                       ("ÉVE", "éve"), ("a b@c", "a b@c")])
def test_usernames_normalized(raw: str, clean: str) -> None:
    assert names.clean_username(raw) == clean


@pytest.mark.parametrize("bad", ["", "   ", "a/b", "a\\b", "a\nb", "a\x00b", "x" * 256, ".."])
def test_bad_usernames_rejected(bad: str) -> None:
    with pytest.raises(names.NameError_):
        names.clean_username(bad)


@pytest.mark.parametrize("ok", ["a", "gpu-1", "x" + "0" * 29])
def test_server_names_ok(ok: str) -> None:
    assert names.validate_server_name(ok) == ok


@pytest.mark.parametrize("bad", ["", "1a", "A", "a_b", "a" * 31, "a/b", "-a"])
def test_server_names_bad(bad: str) -> None:
    with pytest.raises(names.NameError_):
        names.validate_server_name(bad)


@pytest.mark.parametrize("raw", [
    "//evil.com", "https://evil.com/", "/\\evil.com", "\\\\evil.com", "http:/evil.com",
    "///evil.com", "/%0a//evil.com\n", "javascript:alert(1)", "evil.com", "",
])
def test_next_url_rejects_offsite(raw: str) -> None:
    assert names.safe_next_url(raw, "/hub/home") == "/hub/home"


@pytest.mark.parametrize("raw", ["/hub/home", "/user/alice/lab?x=1", "/my%20hub@x/hub/"])
def test_next_url_accepts_local(raw: str) -> None:
    assert names.safe_next_url(raw, "/default") == raw


def test_self_expands_to_owner_filters() -> None:
    got = sc.expand(["self"], owner="alice")
    assert "read:users!user=alice" in got
    assert "access:servers!user=alice" in got
    assert "read:users:name!user=alice" in got  # implied by read:users
    assert not any(s.endswith("!user=bob") for s in got)


def test_filtered_scope_checks() -> None:
    granted = sc.expand(["read:users!user=bob"])
    assert sc.allows(granted, "read:users", sc.Resource(user="bob"))
    assert not sc.allows(granted, "read:users", sc.Resource(user="alice"))
    # a filtered scope never authorizes a request without a matching resource
    assert not sc.allows(granted, "read:users", None)
    group = sc.expand(["read:users!group=class"])
    assert sc.allows(group, "read:users", sc.Resource(user="x", user_groups=frozenset({"class"})))
    assert not sc.allows(group, "read:users", sc.Resource(user="x"))
    server = sc.expand(["access:servers!server=alice/"])
    assert sc.allows(server, "access:servers", sc.Resource(user="alice", server="alice/"))
    assert not sc.allows(server, "access:servers", sc.Resource(user="alice", server="alice/gpu"))


def test_token_never_exceeds_owner() -> None:
    owner = sc.expand(["self"], owner="alice")
    token = sc.expand(["admin:users", "read:users!user=alice", "access:servers!server=alice/x"])
    got = sc.intersect(token, owner)
    assert "admin:users" not in got
    assert "read:users!user=alice" in got
    assert "access:servers!server=alice/x" in got
    assert sc.intersect({"inherit"}, owner) == owner


def test_scope_validation() -> None:
    sc.validate("read:users!user=bob")
    sc.validate("access:servers!server=bob/")
    for bad in ("nope", "read:users!color=red", "read:users!server=bob", "read:users!user="):
        with pytest.raises(sc.ScopeError):
            sc.validate(bad)


def test_throttle_pair_then_unlocks_after_window() -> None:
    t = LoginThrottle(limit=3, window=60)
    for i in range(3):
        assert t.retry_after("1.1.1.1", "alice", now=float(i)) == 0
        t.failed("1.1.1.1", "alice", now=float(i))
    assert t.retry_after("1.1.1.1", "alice", now=3.0) > 0
    # the victim elsewhere is not locked out by one attacker address
    assert t.retry_after("2.2.2.2", "alice", now=3.0) == 0
    assert t.retry_after("1.1.1.1", "alice", now=200.0) == 0


def test_throttle_success_clears_pair() -> None:
    t = LoginThrottle(limit=2, window=60)
    t.failed("ip", "bob", now=0.0)
    t.succeeded("ip", "bob")
    t.failed("ip", "bob", now=1.0)
    assert t.retry_after("ip", "bob", now=2.0) == 0
