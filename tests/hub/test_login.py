"""Login, logout, throttling, cookies and redirects against a real hub (through the proxy)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
import requests

from tests.hubproc import HubProcess


def _post_login(hub: HubProcess, s: requests.Session, name: str, password: str,
                next_url: str | None = None) -> requests.Response:
    s.get(hub.url + "hub/login", timeout=10)
    url = hub.url + "hub/login" + (f"?next={requests.utils.quote(next_url)}" if next_url else "")
    return s.post(url, data={"username": name, "password": password,
                             "_xsrf": s.cookies.get("_xsrf") or ""},
                  allow_redirects=False, timeout=30)


def test_login_sets_hardened_cookie_and_logout_ends_session(hub: HubProcess) -> None:
    name, password = hub.new_user("log")
    s = requests.Session()
    r = _post_login(hub, s, name, password)
    assert r.status_code == 302
    cookie = r.headers["Set-Cookie"]
    assert "himalia-session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie and f"Path={urlsplit(hub.url).path}hub/" in cookie
    stolen = s.cookies.get("himalia-session")
    assert stolen is not None
    assert s.get(hub.url + "hub/home", allow_redirects=False, timeout=10).status_code == 200
    s.get(hub.url + "hub/logout", timeout=10)
    replay = requests.get(hub.url + "hub/home", cookies={"himalia-session": stolen},
                          allow_redirects=False, timeout=10)
    assert replay.status_code == 302 and "/hub/login" in replay.headers["Location"]


def test_wrong_password_and_unknown_user_look_the_same(hub: HubProcess) -> None:
    name, _ = hub.new_user("same")
    a = _post_login(hub, requests.Session(), name, "wrong password!")
    b = _post_login(hub, requests.Session(), "nobody-" + name, "wrong password!")
    assert a.status_code == b.status_code == 403
    assert "Invalid username or password" in a.text and "Invalid username or password" in b.text


def test_login_needs_xsrf(hub: HubProcess) -> None:
    name, password = hub.new_user("xs")
    r = requests.post(hub.url + "hub/login", data={"username": name, "password": password},
                      allow_redirects=False, timeout=10)
    assert r.status_code == 403


@pytest.mark.parametrize("evil", ["//evil.example/", "https://evil.example/", "/\\evil.example",
                                  "\\\\evil.example", "http:evil.example", "/%5Cevil.example"])
def test_next_never_leaves_the_site(hub: HubProcess, evil: str) -> None:
    name, password = hub.new_user("nx")
    r = _post_login(hub, requests.Session(), name, password, next_url=evil)
    assert r.status_code == 302
    location = r.headers["Location"]
    assert location.startswith("/") and not location.startswith("//")
    assert "evil.example" not in urlsplit(location).netloc
    assert "\\" not in location


def test_local_next_is_followed(hub: HubProcess) -> None:
    name, password = hub.new_user("nl")
    target = urlsplit(hub.url).path + f"user/{name}/lab"
    r = _post_login(hub, requests.Session(), name, password, next_url=target)
    assert r.headers["Location"] == target


def test_failed_logins_are_throttled(make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub(extra_args=["--login-max-failures", "3"])
    name, password = hub.new_user("thr")
    s = requests.Session()
    codes = [_post_login(hub, s, name, "bad password").status_code for _ in range(4)]
    assert codes[:3] == [403, 403, 403] and codes[3] == 429
    r = _post_login(hub, s, name, password)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_forged_forwarding_headers_do_not_dodge_the_throttle(
        make_hub: Callable[..., HubProcess]) -> None:
    """Each try claims another address (X-Forwarded-For, X-Real-Ip): the hub counts the one our
    proxy appended, so the attempts still add up."""
    hub = make_hub(extra_args=["--login-max-failures", "3"])
    name, _ = hub.new_user("xff")
    codes = []
    for i in range(4):
        s = requests.Session()
        s.headers.update({"X-Forwarded-For": f"10.0.0.{i}", "X-Real-Ip": f"10.1.0.{i}"})
        codes.append(_post_login(hub, s, name, "bad password").status_code)
    assert codes == [403, 403, 403, 429]
    assert "from 127.0.0.1" in hub.log_text() and "10.0.0." not in hub.log_text()


@pytest.mark.parametrize(("peer", "forwarded", "hops", "seen"), [
    ("127.0.0.1", ["6.6.6.6, 1.2.3.4"], 1, "1.2.3.4"),  # ours appended 1.2.3.4
    ("127.0.0.1", ["6.6.6.6", "1.2.3.4"], 1, "1.2.3.4"),  # two header lines, in order
    ("127.0.0.1", ["6.6.6.6, 5.5.5.5, 1.2.3.4"], 2, "5.5.5.5"),  # a trusted proxy in front
    ("127.0.0.1", ["1.2.3.4"], 2, "127.0.0.1"),  # fewer entries than hops: the peer
    ("::1", ["1.2.3.4"], 0, "::1"),  # 0 hops: the header is ignored
    ("192.0.2.7", ["1.2.3.4"], 1, "192.0.2.7"),  # not from our proxy: never trusted
    ("127.0.0.1", ["not-an-address"], 1, "127.0.0.1"),
])
def test_client_address(peer: str, forwarded: list[str], hops: int, seen: str) -> None:
    from hub.handlers.base import client_address

    assert client_address(peer, forwarded, hops) == seen


def test_junk_cookie_planted_at_root_does_not_break_login(hub: HubProcess) -> None:
    name, password = hub.new_user("junk")
    s = hub.login(name, password)
    # what a user server on the same origin could plant for path "/"
    s.cookies.set("himalia-session", "forged|junk", domain=urlsplit(hub.url).hostname, path="/")
    r = s.get(hub.url + "hub/home", allow_redirects=False, timeout=10)
    assert r.status_code == 200 and name in r.text
    alone = requests.get(hub.url + "hub/home", cookies={"himalia-session": "forged|junk"},
                         allow_redirects=False, timeout=10)
    assert alone.status_code == 302


def test_dummy_authenticator_creates_users(make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub(extra_args=["--authenticator", "dummy"])
    s = requests.Session()
    r = _post_login(hub, s, "  NewPerson ", "anything")
    assert r.status_code == 302
    assert hub.api("GET", "/users/newperson").json()["name"] == "newperson"
    assert _post_login(hub, requests.Session(), "x", "").status_code == 403


def test_huge_username_gives_short_log_lines(hub: HubProcess) -> None:
    before = len(hub.lines)
    _post_login(hub, requests.Session(), "A" * 1_000_000 + "\nFAKE LOG LINE", "pw")
    new = hub.lines[before:]
    assert new and all(len(line) < 2000 for line in new)
    assert not any(line.startswith("FAKE LOG LINE") for line in new)


def test_security_headers_on_pages(hub: HubProcess) -> None:
    for path in ("hub/login", "hub/no-such-page", "hub/error/503"):
        r = requests.get(hub.url + path, timeout=10)
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], path
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "Access-Control-Allow-Origin" not in r.headers


def test_a_huge_login_form_gets_a_clear_413(hub: HubProcess) -> None:
    """Through the proxy, as a browser sends it: not a dropped connection or the proxy's 503."""
    s = requests.Session()
    for size in (200_000, 3_000_000):  # over the form limit: read (discarded), then refused
        r = _post_login(hub, s, "B" * size, "pw")
        assert r.status_code == 413 and "too large" in r.text, (size, r.status_code)
    assert _post_login(hub, s, "someone", "pw").status_code == 403  # the form still works
