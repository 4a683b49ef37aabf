"""The OAuth provider without sockets: oauthlib with our validator on a throwaway SQLite file.

Covers the protocol rules (exact redirect_uri, PKCE, single-use expiring hashed codes, client
authentication, replay revocation), the access decision, and the consent template's escaping.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jinja2
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hub.api.oauth import _with_status
from hub.config import load
from hub.db.database import make_engine, make_sessionmaker, transaction
from hub.db.models import (
    APIToken,
    Base,
    Group,
    LoginSession,
    OAuthClient,
    OAuthCode,
    Role,
    Server,
    User,
    utcnow,
)
from hub.paths import template_dir
from hub.services import tokens
from hub.services.identity import Identity, end_session, new_session
from hub.services.oauth import (
    AuthorizationRequest,
    OAuthFatal,
    OAuthProvider,
    OAuthRedirect,
    authorizing_scopes,
    decide_for,
    holds,
    target_of,
)
from hub.services.oauth_validator import Client, identify_scopes, parse_basic_auth

AUTHORIZE = "http://hub.test/base/hub/api/oauth2/authorize"
TOKEN = "http://hub.test/base/hub/api/oauth2/token"
CALLBACK = "/base/user/alice/oauth_callback"
CLIENT = "jupyterhub-user-alice"
SECRET = "server-api-token-of-alice"
VERIFIER = "v" * 43 + "-._~0123456789"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass
class World:
    """A database with alice (owning a server and its OAuth client), bob and an admin."""

    db: sessionmaker[Session]
    path: Path
    provider: OAuthProvider
    logins: dict[str, tuple[Identity, str]]

    def login(self, name: str) -> Identity:
        return self.logins[name][0]

    def authorize(self, who: str = "alice", **params: str) -> str:
        """The Location of an authorization that should succeed for ``who``."""
        uri = authorize_uri(**params)
        auth = self.provider.check(uri)
        decision = self.provider.decide(auth, self.login(who), {})
        assert decision.kind in ("owner", "consent"), decision
        return self.provider.issue_code(uri, self.login(who), decision)

    def code(self, who: str = "alice", **params: str) -> str:
        location = self.authorize(who, **params)
        query = parse_qs(urlsplit(location).query)
        return query["code"][0]

    def exchange(self, code: str, *, basic: bool = False, secret: str = SECRET,
                 **extra: str) -> tuple[int, dict[str, Any]]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                "client_id": CLIENT, **extra}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if basic:
            raw = base64.b64encode(f"{CLIENT}:{secret}".encode()).decode()
            headers["Authorization"] = f"Basic {raw}"
        else:
            form["client_secret"] = secret
        form = {k: v for k, v in form.items() if v != "<omit>"}
        _, body, status = self.provider.token_response(TOKEN, urlencode(form), headers)
        return status, json.loads(body)

    def token_row(self, access_token: str) -> APIToken | None:
        with transaction(self.db) as s:
            return s.scalar(select(APIToken).where(
                APIToken.hashed == tokens.hash_token(access_token)))


def authorize_uri(**params: str) -> str:
    query = {"client_id": CLIENT, "redirect_uri": CALLBACK, "response_type": "code",
             "state": "st4te", **params}
    return AUTHORIZE + "?" + urlencode({k: v for k, v in query.items() if v != "<omit>"})


def _identity(s: Session, user: User) -> tuple[Identity, str]:
    key = new_session(s, user, max_age_days=1)
    row = s.scalar(select(LoginSession).where(LoginSession.hashed == tokens.hash_token(key)))
    assert row is not None
    ident = Identity(user_id=user.id, name=user.name, admin=user.admin, scopes=frozenset(),
                     kind="cookie", session_id=row.id)
    return ident, key


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    path = tmp_path / "oauth.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    db = make_sessionmaker(engine)
    logins: dict[str, tuple[Identity, str]] = {}
    with transaction(db) as s:
        alice, bob, root = User(name="alice"), User(name="bob"), User(name="root", admin=True)
        s.add_all([alice, bob, root])
        s.flush()
        server = Server(user_id=alice.id, name="")
        s.add(server)
        s.flush()
        s.add(OAuthClient(identifier=CLIENT, secret_hash=tokens.hash_token(SECRET),
                          redirect_uri=CALLBACK, server_id=server.id,
                          allowed_scopes=["access:servers!server=alice/",
                                          "access:servers!user=alice"]))
        for user in (alice, bob, root):
            logins[user.name] = _identity(s, user)
    yield World(db, path, OAuthProvider(db, load(environ={})), logins)
    engine.dispose()


# --- authorization requests ---------------------------------------------------------------------
def test_unknown_client_is_fatal(world: World) -> None:
    with pytest.raises(OAuthFatal, match="Unknown OAuth client"):
        world.provider.check(authorize_uri(client_id="nobody"))


@pytest.mark.parametrize("uri", [
    "https://evil.example/cb", "/base/user/alice/oauth_callback/", "/base/user/alice/",
    "//evil.example/base/user/alice/oauth_callback", "/base/user/alice/oauth_callback?x=1",
    "/base/user/ALICE/oauth_callback", "",
])
def test_redirect_uri_must_match_exactly(world: World, uri: str) -> None:
    with pytest.raises(OAuthFatal, match="redirect_uri"):
        world.provider.check(authorize_uri(redirect_uri=uri))


def test_missing_redirect_uri_uses_the_registered_one(world: World) -> None:
    location = world.authorize(redirect_uri="<omit>")
    assert location.startswith(CALLBACK + "?")


@pytest.mark.parametrize("params,error", [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": "code token"}, "unauthorized_client"),
    ({"code_challenge": s256(VERIFIER), "code_challenge_method": "S512"}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"scope": "admin:users"}, "invalid_scope"),
])
def test_client_errors_redirect_to_the_registered_uri(world: World, params: dict[str, str],
                                                      error: str) -> None:
    with pytest.raises(OAuthRedirect) as info:
        world.provider.check(authorize_uri(**params))
    parts = urlsplit(info.value.location)
    assert parts.path == CALLBACK and not parts.netloc
    query = parse_qs(parts.query)
    assert query["error"] == [error] and query["state"] == ["st4te"]


def test_duplicate_parameters_are_fatal(world: World) -> None:
    with pytest.raises(OAuthFatal):
        world.provider.check(authorize_uri() + "&redirect_uri=" + CALLBACK)


def test_malformed_query_is_fatal(world: World) -> None:
    with pytest.raises(OAuthFatal):
        world.provider.check(authorize_uri() + "&x=<script>")


# --- the code grant ------------------------------------------------------------------------------
def test_full_flow_with_pkce_s256(world: World) -> None:
    location = world.authorize(code_challenge=s256(VERIFIER), code_challenge_method="S256")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st4te"]
    code = query["code"][0]
    status, body = world.exchange(code, code_verifier=VERIFIER)
    assert status == 200, body
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 86400
    assert set(body["scope"].split()) == {
        "access:servers!server=alice/", "access:servers!user=alice", *identify_scopes("alice")}
    row = world.token_row(body["access_token"])
    assert row is not None and row.kind == "oauth" and row.client_id == CLIENT
    assert row.session_id == world.login("alice").session_id
    assert row.user_id == world.login("alice").user_id
    assert row.expires_at is not None


def test_secrets_are_stored_hashed(world: World) -> None:
    code = world.code(code_challenge=VERIFIER, code_challenge_method="plain")
    raw = world.path.read_bytes() + _wal(world.path)
    assert code.encode() not in raw
    status, body = world.exchange(code, code_verifier=VERIFIER)
    assert status == 200
    raw = world.path.read_bytes() + _wal(world.path)
    assert body["access_token"].encode() not in raw and SECRET.encode() not in raw


def _wal(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def test_plain_pkce_and_wrong_verifier(world: World) -> None:
    code = world.code(code_challenge=VERIFIER, code_challenge_method="plain")
    status, body = world.exchange(code, code_verifier=VERIFIER[:-1] + "X")
    assert status == 400 and body["error"] == "invalid_grant"
    # a code is presented once: even the right verifier cannot use it now
    status, body = world.exchange(code, code_verifier=VERIFIER)
    assert status == 400 and body["error"] == "invalid_grant"


def test_challenge_defaults_to_plain(world: World) -> None:
    code = world.code(code_challenge=VERIFIER)
    assert world.exchange(code, code_verifier=VERIFIER)[0] == 200


def test_verifier_required_when_challenged(world: World) -> None:
    code = world.code(code_challenge=s256(VERIFIER), code_challenge_method="S256")
    status, body = world.exchange(code)
    assert status == 400 and body["error"] == "invalid_request"
    assert "verifier" in body["error_description"].lower()


def test_s256_rejects_the_challenge_as_verifier(world: World) -> None:
    challenge = s256(VERIFIER)
    code = world.code(code_challenge=challenge, code_challenge_method="S256")
    assert world.exchange(code, code_verifier=challenge)[1]["error"] == "invalid_grant"


def test_reused_code_fails_and_revokes_its_token(world: World) -> None:
    code = world.code()
    status, body = world.exchange(code)
    assert status == 200
    assert world.token_row(body["access_token"]) is not None
    status, again = world.exchange(code)
    assert status == 400 and again["error"] == "invalid_grant"
    assert world.token_row(body["access_token"]) is None


def test_expired_code_fails(world: World) -> None:
    code = world.code()
    with transaction(world.db) as s:
        s.execute(update(OAuthCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    status, body = world.exchange(code)
    assert status == 400 and body["error"] == "invalid_grant"


def test_codes_are_short_lived(world: World) -> None:
    world.code()
    with transaction(world.db) as s:
        row = s.scalars(select(OAuthCode)).one()
        assert row.expires_at - utcnow() <= timedelta(minutes=5)


def test_code_dies_with_logout(world: World) -> None:
    code = world.code()
    with transaction(world.db) as s:
        end_session(s, world.logins["alice"][1])
    assert world.exchange(code)[1]["error"] == "invalid_grant"


def test_logout_revokes_issued_tokens(world: World) -> None:
    status, body = world.exchange(world.code())
    assert status == 200
    with transaction(world.db) as s:
        end_session(s, world.logins["alice"][1])
    assert world.token_row(body["access_token"]) is None


def test_token_redirect_uri_must_match_the_code(world: World) -> None:
    code = world.code()
    status, body = world.exchange(code, redirect_uri="/base/user/alice/other")
    assert status == 400 and body["error"] in ("invalid_request", "invalid_grant")


@pytest.mark.parametrize("secret", ["wrong", "", SECRET + "x"])
def test_wrong_client_secret_is_401(world: World, secret: str) -> None:
    code = world.code()
    status, body = world.exchange(code, secret=secret)
    assert status == 401 and body["error"] == "invalid_client"
    # the code survives a failed client authentication (it was never presented)
    assert world.exchange(code)[0] == 200


def test_http_basic_client_authentication(world: World) -> None:
    assert world.exchange(world.code(), basic=True, client_id="<omit>")[0] == 200
    status, body = world.exchange(world.code(), basic=True, secret="nope")
    assert status == 401 and body["error"] == "invalid_client"
    # one authentication method only (RFC 6749 §2.3)
    status, body = world.exchange(world.code(), basic=True, client_secret=SECRET)
    assert status == 401 and body["error"] == "invalid_client"


def test_code_of_another_client_is_refused(world: World) -> None:
    code = world.code()
    with transaction(world.db) as s:
        s.add(OAuthClient(identifier="other", secret_hash=tokens.hash_token("other-secret"),
                          redirect_uri=CALLBACK, allowed_scopes=[]))
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
            "client_id": "other", "client_secret": "other-secret"}
    _, body, status = world.provider.token_response(TOKEN, urlencode(form), {})
    assert status == 400 and json.loads(body)["error"] == "invalid_grant"
    assert world.exchange(code)[0] == 200  # not consumed by the wrong client


@pytest.mark.parametrize("form", [
    {"grant_type": "refresh_token", "refresh_token": "x"},
    {"grant_type": "password", "username": "alice", "password": "x"},
    {"grant_type": "authorization_code"},
])
def test_other_grants_are_refused(world: World, form: dict[str, str]) -> None:
    form = {**form, "client_id": CLIENT, "client_secret": SECRET}
    _, body, status = world.provider.token_response(TOKEN, urlencode(form), {})
    assert status in (400, 401) and "error" in json.loads(body)


def test_query_parameters_on_token_endpoint_refused(world: World) -> None:
    form = {"grant_type": "authorization_code", "code": world.code(), "client_id": CLIENT,
            "client_secret": SECRET}
    _, body, status = world.provider.token_response(TOKEN + "?x=1", urlencode(form), {})
    assert status == 400 and json.loads(body)["error"] == "invalid_request"


# --- who may authorize ---------------------------------------------------------------------------
def test_owner_is_approved_without_consent(world: World) -> None:
    auth = world.provider.check(authorize_uri())
    decision = world.provider.decide(auth, world.login("alice"), {})
    assert decision.kind == "owner" and decision.target == "alice/"


def test_other_user_is_denied(world: World) -> None:
    auth = world.provider.check(authorize_uri())
    assert world.provider.decide(auth, world.login("bob"), {}).kind == "deny"


def test_admin_needs_admin_access(world: World) -> None:
    auth = world.provider.check(authorize_uri())
    assert world.provider.decide(auth, world.login("root"), {}).kind == "deny"
    allowed = OAuthProvider(world.db, load(environ={"HIMALIA_ADMIN_ACCESS": "1"}))
    decision = allowed.decide(auth, world.login("root"), {})
    assert decision.kind == "consent" and "access:servers!server=alice/" in decision.scopes


def test_role_holder_gets_consent_and_only_what_they_hold(world: World) -> None:
    with transaction(world.db) as s:
        bob = s.scalars(select(User).where(User.name == "bob")).one()
        bob.roles.append(Role(name="helper", scopes=["access:servers!server=alice/"]))
    auth = world.provider.check(authorize_uri())
    roles = {"helper": ["access:servers!server=alice/"]}
    decision = world.provider.decide(auth, world.login("bob"), roles)
    assert decision.kind == "consent" and decision.scopes == ("access:servers!server=alice/",)
    code = parse_qs(urlsplit(world.provider.issue_code(
        authorize_uri(), world.login("bob"), decision)).query)["code"][0]
    status, body = world.exchange(code)
    assert status == 200
    assert body["scope"].split() == ["access:servers!server=alice/", *identify_scopes("bob")]


def test_group_filtered_grant_counts(world: World) -> None:
    with transaction(world.db) as s:
        alice = s.scalars(select(User).where(User.name == "alice")).one()
        alice.groups.append(Group(name="class"))
        bob = s.scalars(select(User).where(User.name == "bob")).one()
        bob.roles.append(Role(name="teacher"))
    auth = world.provider.check(authorize_uri())
    decision = world.provider.decide(auth, world.login("bob"),
                                     {"teacher": ["access:servers!group=class"]})
    assert decision.kind == "consent" and len(decision.scopes) == 2


def test_deny_never_issues_a_code(world: World) -> None:
    auth = world.provider.check(authorize_uri())
    decision = world.provider.decide(auth, world.login("bob"), {})
    with pytest.raises(OAuthFatal):
        world.provider.issue_code(authorize_uri(), world.login("bob"), decision)
    with sqlite3.connect(world.path) as conn:
        assert conn.execute("SELECT count(*) FROM oauth_codes").fetchone() == (0,)


CLIENT_ROW = Client("c", "/cb", ("access:servers!server=alice/", "access:servers!user=alice"),
                    None, "")


def test_decide_for_pure_cases() -> None:
    target = target_of(CLIENT_ROW, None)
    assert target == ("alice", "alice/")
    scopes = CLIENT_ROW.allowed_scopes
    assert decide_for(CLIENT_ROW, scopes, target, "alice", set(), frozenset()).kind == "owner"
    assert decide_for(CLIENT_ROW, scopes, target, "bob", set(), frozenset()).kind == "deny"
    held = {"access:servers!user=alice"}
    assert decide_for(CLIENT_ROW, scopes, target, "bob", held, frozenset()).scopes == scopes
    nothing = Client("n", "/cb", (), None, "")
    assert decide_for(nothing, (), target_of(nothing, None), "bob", set(),
                      frozenset()).kind == "consent"


@pytest.mark.parametrize("held,scope,ok", [
    ({"access:servers"}, "access:servers!server=alice/", True),
    ({"access:servers!user=alice"}, "access:servers!server=alice/work", True),
    ({"access:servers!server=alice/"}, "access:servers!server=alice/", True),
    ({"access:servers!server=alice/"}, "access:servers!user=alice", False),
    ({"access:servers!server=alice/"}, "access:servers!server=alice/work", False),
    ({"access:servers!user=bob"}, "access:servers!server=alice/", False),
    ({"access:servers!group=g"}, "access:servers!server=alice/", True),
    (set(), "access:servers", False),
    ({"access:servers"}, "access:servers!bogus=1", False),
])
def test_holds(held: set[str], scope: str, ok: bool) -> None:
    assert holds(held, scope, frozenset({"g"})) is ok


def test_admin_role_counts_only_with_admin_access() -> None:
    admin = User(name="root", admin=True)
    admin.roles, admin.groups = [], []
    assert "access:servers" not in authorizing_scopes(admin, {}, admin_access=False)
    assert "access:servers!user=root" in authorizing_scopes(admin, {}, admin_access=False)
    assert "access:servers" in authorizing_scopes(admin, {}, admin_access=True)


@pytest.mark.parametrize("header,expected", [
    ("Basic " + base64.b64encode(b"id:se:cret").decode(), ("id", "se:cret")),
    ("basic " + base64.b64encode(b"a%2Db:x+y").decode(), ("a-b", "x y")),
    ("Basic !!!", None), ("Bearer abc", None), ("Basic " + base64.b64encode(b"x").decode(), None),
    ("", None),
])
def test_parse_basic_auth(header: str, expected: tuple[str, str] | None) -> None:
    assert parse_basic_auth(header) == expected


# --- around the protocol -------------------------------------------------------------------------
def test_oauthlib_debug_logs_are_silenced(world: World) -> None:
    assert logging.getLogger("oauthlib").getEffectiveLevel() >= logging.INFO


def test_error_bodies_carry_the_hub_shape() -> None:
    body = json.loads(_with_status('{"error": "invalid_grant"}', 400))
    assert body == {"error": "invalid_grant", "status": 400, "message": "invalid_grant"}
    assert json.loads(_with_status("not json", 500))["error"] == "server_error"
    assert _with_status('{"access_token": "x"}', 200) == '{"access_token": "x"}'


def test_consent_page_escapes_everything() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    evil = '"><img src=x onerror=alert(1)>'
    html = env.get_template("oauth.html").render(
        base_url="/", prefix="/hub/", static_url=lambda p: "/hub/static/" + p, user=None,
        xsrf="tok", version="0", target=evil + "/", description=evil,
        scopes=[{"scope": "access:servers!server=" + evil, "text": evil}],
        action="/hub/api/oauth2/authorize?a=1&state=" + evil, cancel_url="/hub/home")
    assert "<img" not in html and "&#34;&gt;&lt;img" in html
    assert 'name="_xsrf" value="tok"' in html and 'method="post"' in html


def test_check_returns_requested_scopes(world: World) -> None:
    auth = world.provider.check(authorize_uri(scope="access:servers!server=alice/"))
    assert isinstance(auth, AuthorizationRequest)
    assert auth.scopes == ("access:servers!server=alice/",)
    assert world.provider.check(authorize_uri()).scopes == CLIENT_ROW.allowed_scopes
