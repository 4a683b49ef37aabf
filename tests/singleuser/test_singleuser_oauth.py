"""OAuth client logic without sockets: PKCE, state cookie, authorize URL, next URLs, scopes."""

from __future__ import annotations

import base64
import hashlib
import re
from http.cookies import Morsel
from urllib.parse import parse_qs, urlsplit

import pytest

from singleuser.oauth import (
    LoginState,
    authorize_redirect,
    cookie_name_for,
    has_access,
    new_pkce_verifier,
    pkce_challenge,
    safe_next,
    scope_covers,
)

PREFIX = "/my%20hub@/user/alice/"
DEFAULT = PREFIX + "lab"


def test_pkce_rfc7636_example() -> None:
    # RFC 7636 appendix B
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_pkce_verifier_shape() -> None:
    verifier = new_pkce_verifier()
    assert 43 <= len(verifier) <= 128
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", verifier)
    assert new_pkce_verifier() != verifier
    digest = hashlib.sha256(verifier.encode()).digest()
    assert pkce_challenge(verifier) == base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_login_state_round_trip_and_match() -> None:
    login = LoginState.new(PREFIX + "lab/tree/x.ipynb")
    again = LoginState.loads(login.dumps())
    assert again == login
    assert login.matches(login.state)
    assert not login.matches("")
    assert not login.matches(login.state + "x")
    assert LoginState.new("/").state != login.state


@pytest.mark.parametrize("value", [None, "", b"", "not json", "[]", '{"state": "s"}',
                                   '{"state": 1, "next": "/", "verifier": "v"}'])
def test_login_state_rejects_garbage(value: str | bytes | None) -> None:
    assert LoginState.loads(value) is None


def test_authorize_redirect_query() -> None:
    login = LoginState.new(DEFAULT)
    url = authorize_redirect("/my%20hub@/hub/api/oauth2/authorize", "jupyterhub-user-alice",
                             PREFIX + "oauth_callback", login)
    parts = urlsplit(url)
    assert parts.path == "/my%20hub@/hub/api/oauth2/authorize"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "client_id": "jupyterhub-user-alice",
        "redirect_uri": PREFIX + "oauth_callback",
        "response_type": "code",
        "state": login.state,
        "code_challenge": pkce_challenge(login.verifier),
        "code_challenge_method": "S256",
    }
    assert " " not in url and "+" not in url


@pytest.mark.parametrize(
    ("client_id", "cookie"),
    [
        ("jupyterhub-user-alice", "jupyterhub-user-alice"),
        ("jupyterhub-user-alice-gpu", "jupyterhub-user-alice-gpu"),
        ("jupyterhub-user-a@b.org", "jupyterhub-user-a%40b.org"),
        ("jupyterhub-user-a%2Db-gpu", "jupyterhub-user-a%2Db-gpu"),
        ("jupyterhub-user-a=b;c", "jupyterhub-user-a%3Db%3Bc"),
    ],
)
def test_cookie_name_is_the_client_id_made_cookie_safe(client_id: str, cookie: str) -> None:
    assert cookie_name_for(client_id) == cookie
    Morsel[str]().set(cookie, "value", "value")  # raises CookieError for an illegal name


@pytest.mark.parametrize(
    "next_url",
    [
        PREFIX + "lab",
        PREFIX + "lab/tree/notebook.ipynb?reset",
        PREFIX,
        PREFIX.rstrip("/"),
        "/my hub@/user/alice/lab",
    ],
)
def test_safe_next_accepts_local_paths_under_prefix(next_url: str) -> None:
    assert safe_next(next_url, PREFIX, DEFAULT) == next_url


@pytest.mark.parametrize(
    "next_url",
    [
        None,
        "",
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "lab",
        "/my%20hub@/user/bob/lab",
        "/my%20hub@/user/alicex/lab",
        "/my%20hub@/hub/home",
        PREFIX + "../bob/lab",
        PREFIX + "%2e%2e/bob/lab",
        PREFIX + "lab\r\nSet-Cookie: x=y",
    ],
)
def test_safe_next_rejects_everything_else(next_url: str | None) -> None:
    assert safe_next(next_url, PREFIX, DEFAULT) == DEFAULT


ACCESS = ("access:servers!server=alice/", "access:servers!user=alice")


@pytest.mark.parametrize(
    ("held", "allowed"),
    [
        (["access:servers!server=alice/"], True),
        (["access:servers!user=alice"], True),
        (["access:servers"], True),  # unfiltered (e.g. admins, when the hub grants it)
        (["read:users", "access:servers!user=bob"], False),
        (["access:servers!server=alice/other"], False),
        (["access:servers!server=alicex/"], False),
        (["access:servers!user=alic"], False),
        (["access:servers!group=staff"], False),
        (["admin:servers", "admin:users"], False),
        (["servers"], False),
        ([], False),
    ],
)
def test_has_access(held: list[str], allowed: bool) -> None:
    assert has_access(held, ACCESS) is allowed


def test_scope_covers_named_servers() -> None:
    assert scope_covers("access:servers!user=alice", "access:servers!server=alice/gpu")
    assert not scope_covers("access:servers!user=alice", "access:servers!server=alicex/gpu")
    assert not scope_covers("access:servers!server=alice/", "access:servers!server=alice/gpu")
    assert not scope_covers("access:services", "access:servers!server=alice/")
    assert has_access(["access:servers!server=alice/gpu"], ["access:servers!server=alice/gpu"])
