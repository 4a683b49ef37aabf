"""OpenID Connect sign-in against a real OpenID Provider (npm ``oidc-provider``), through a real
hub and proxy: groups, admin_groups, allowed_groups, auth_state (encrypted, refreshed, handed to
the spawner's hook), logout at the provider, and the bad-input cases — each a clear 4xx page
that creates no user and logs no token or code."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.fernet import Fernet

from tests.hubproc import HubProcess
from tests.oidc_provider import CLIENT_SECRET, OIDCProvider, hub_env, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("oidc")]
KEY = Fernet.generate_key().decode()
JWT = re.compile(r"eyJ[\w-]{10,}\.")


@pytest.fixture(scope="module")
def hub(provider: OIDCProvider, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[HubProcess]:
    env = {**hub_env(provider),
           "HIMALIA_ALLOWED_GROUPS": "gpu,staff", "HIMALIA_ADMIN_GROUPS": "hub-admins",
           "HIMALIA_MANAGE_GROUPS": "1", "HIMALIA_AUTH_STATE_KEY": KEY,
           "HIMALIA_LOGIN_MAX_FAILURES": "100", "HIMALIA_OIDC_USERINFO": "1",
           "HIMALIA_SPAWNER": "tests.hub.authstate_spawner:AuthStateSpawner"}
    proc = HubProcess(tmp_path_factory.mktemp("oidchub"), env=env)
    try:
        yield proc.start()
    finally:
        proc.cleanup()


def _callback(hub: HubProcess) -> str:
    return hub.url + "hub/oauth_callback"


def _login(hub: HubProcess, name: str) -> tuple[requests.Session, requests.Response, str]:
    """Sign in as ``name`` at the provider; returns the session, the hub's answer to the
    callback and the callback URL (with its code)."""
    s = requests.Session()
    url = sign_in(s, hub.url + "hub/oauth_login?next=%2Fmy%2520hub%40x%2Fhub%2Fhome", name,
                  _callback(hub))
    r = s.get(url, allow_redirects=False, timeout=30)
    return s, r, url


def _forget(hub: HubProcess, name: str) -> None:
    assert hub.api("DELETE", f"/users/{name}").status_code in (204, 404)


def _assert_clean_refusal(hub: HubProcess, r: requests.Response, s: requests.Session,
                          name: str, status: int, url: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert "text/html" in r.headers["Content-Type"]
    assert "himalia-session" not in s.cookies
    assert hub.api("GET", f"/users/{name}").status_code == 404
    codes = parse_qs(urlsplit(url).query).get("code", [])
    time.sleep(0.2)  # the log line of the refusal
    log = hub.log_text()
    assert not any(code in log for code in codes)
    assert not JWT.search(log) and CLIENT_SECRET not in log


def test_login_page_offers_the_provider_and_no_password_form(hub: HubProcess) -> None:
    page = requests.get(hub.url + "hub/login", timeout=10).text
    assert "Sign in with Test IdP" in page and 'id="login-service"' in page
    assert 'name="password"' not in page


def test_alice_signs_in_with_groups_and_encrypted_auth_state(hub: HubProcess) -> None:
    s, r, url = _login(hub, "alice")
    assert r.status_code == 302 and r.headers["Location"].endswith("/hub/home")
    assert s.get(hub.url + "hub/home", allow_redirects=False, timeout=10).status_code == 200
    model = hub.api("GET", "/users/alice").json()
    assert sorted(model["groups"]) == ["gpu", "students"] and model["admin"] is False
    assert any("claims from userinfo: " in line and "groups" in line for line in hub.lines)
    state = model["auth_state"]
    assert state["claims"]["preferred_username"] == "alice" and state["access_token"]
    assert state["refresh_token"] and state["expires_at"] > time.time()
    # Encrypted at rest: the token is nowhere in the database file.
    with sqlite3.connect(hub.data_dir / "himalia.sqlite") as conn:
        (blob,) = conn.execute("SELECT encrypted_auth_state FROM users WHERE name='alice'"
                               ).fetchone()
    conn.close()
    assert state["access_token"].encode() not in bytes(blob)
    assert state["access_token"].encode() not in (hub.data_dir / "himalia.sqlite").read_bytes()
    # Only with admin:auth_state: a read:users token sees the user, not the state.
    reader = hub.make_token("admin", "read:users")
    assert "auth_state" not in hub.api("GET", "/users/alice", token=reader).json()
    log = hub.log_text()
    assert state["access_token"] not in log and not JWT.search(log)
    assert parse_qs(urlsplit(url).query)["code"][0] not in log


def test_admin_groups_make_carol_admin(hub: HubProcess) -> None:
    _, r, _ = _login(hub, "carol")
    assert r.status_code == 302
    model = hub.api("GET", "/users/carol").json()
    assert model["admin"] is True and sorted(model["groups"]) == ["hub-admins", "staff"]


def test_user_outside_allowed_groups_is_refused(hub: HubProcess) -> None:
    s, r, url = _login(hub, "bob")
    _assert_clean_refusal(hub, r, s, "bob", 403, url)
    assert "not allowed to use this hub" in r.text


@pytest.mark.parametrize("mode", ["tamper", "alg-none", "nonce", "aud", "iss", "expired"])
def test_doctored_id_tokens_are_refused(hub: HubProcess, provider: OIDCProvider,
                                        mode: str) -> None:
    _forget(hub, "alice")
    seen = len(hub.lines)
    provider.mutate(mode)
    try:
        s, r, url = _login(hub, "alice")
    finally:
        provider.mutate("")
    _assert_clean_refusal(hub, r, s, "alice", 403, url)
    assert "Sign-in with your identity provider failed" in r.text
    refusals = [line for line in hub.lines[seen:] if "ID token refused" in line]
    assert refusals, hub.lines[seen:]


def test_replayed_code_is_refused(hub: HubProcess) -> None:
    _forget(hub, "alice")
    s = requests.Session()
    url = sign_in(s, hub.url + "hub/oauth_login", "alice", _callback(hub))
    state_cookie = s.cookies.get("himalia-oidc-state")
    assert state_cookie
    assert s.get(url, allow_redirects=False, timeout=30).status_code == 302
    _forget(hub, "alice")
    # The same callback again, even with the state cookie put back: the provider refuses it.
    again = requests.Session()
    again.cookies.set("himalia-oidc-state", state_cookie)
    r = again.get(url, allow_redirects=False, timeout=30)
    _assert_clean_refusal(hub, r, again, "alice", 403, url)
    # Without the state cookie (another browser): refused before the provider is asked.
    r = requests.get(url, allow_redirects=False, timeout=30)
    assert r.status_code == 400 and "sign in again" in r.text


def test_wrong_state_is_refused(hub: HubProcess) -> None:
    _forget(hub, "alice")
    s = requests.Session()
    url = sign_in(s, hub.url + "hub/oauth_login", "alice", _callback(hub))
    forged = re.sub(r"state=[^&]+", "state=forged", url)
    r = s.get(forged, allow_redirects=False, timeout=30)
    _assert_clean_refusal(hub, r, s, "alice", 400, url)


def test_spawner_hook_gets_refreshed_auth_state_and_logout_ends_provider_session(
        hub: HubProcess) -> None:
    s, r, _ = _login(hub, "alice")
    assert r.status_code == 302
    old = hub.api("GET", "/users/alice").json()["auth_state"]
    # Make the stored access token look expired: the hub must refresh it before the spawn.
    fernet = Fernet(KEY.encode())
    path = hub.data_dir / "himalia.sqlite"
    with sqlite3.connect(path) as conn:
        (blob,) = conn.execute("SELECT encrypted_auth_state FROM users WHERE name='alice'"
                               ).fetchone()
        state = json.loads(fernet.decrypt(bytes(blob)))
        state["expires_at"] = time.time() - 5
        conn.execute("UPDATE users SET encrypted_auth_state=? WHERE name='alice'",
                     (fernet.encrypt(json.dumps(state).encode()),))
    conn.close()
    assert hub.api("POST", "/users/alice/server").status_code in (201, 202)
    try:
        deadline = time.monotonic() + 30
        while not hub.api("GET", "/users/alice").json()["servers"].get("", {}).get("ready"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        env = requests.get(hub.url + "user/alice/env", timeout=10).json()
        new = hub.api("GET", "/users/alice").json()["auth_state"]
        assert new["access_token"] != old["access_token"]
        assert env["OIDC_ACCESS_TOKEN"] == new["access_token"]
        assert env["OIDC_GROUPS"] == "students,gpu"
    finally:
        assert hub.api("DELETE", "/users/alice/server").status_code in (202, 204)
    out = s.get(hub.url + "hub/logout", allow_redirects=False, timeout=10)
    assert out.status_code == 302
    assert out.headers["Location"].startswith(hub_issuer(hub) + "/session/end?")
    assert s.get(hub.url + "hub/home", allow_redirects=False, timeout=10).status_code == 302


def hub_issuer(hub: HubProcess) -> str:
    return hub.extra_env["HIMALIA_OIDC_ISSUER"]


def test_rotated_provider_keys_are_fetched(hub: HubProcess, provider: OIDCProvider) -> None:
    _login(hub, "carol")  # the hub has the current keys cached
    provider.stop()
    provider.start(rotate_keys=True)
    _, r, _ = _login(hub, "carol")
    assert r.status_code == 302


def test_unreachable_provider_is_a_clear_error(tmp_path: Path) -> None:
    """In-process: an issuer nobody answers on gives AuthUnavailable at once (the pages turn
    it into a 503 "sign-in is unavailable")."""
    import asyncio

    from hub.config import Config
    from hub.db.database import make_engine, make_sessionmaker
    from hub.services.auth import AuthUnavailable
    from hub.services.oidc import OIDCAuthenticator
    from tests.oidc_provider import free_port

    cfg = Config(oidc_issuer=f"http://127.0.0.1:{free_port()}", oidc_client_id="x",
                 oidc_client_secret="y")
    engine = make_engine("sqlite://")
    try:
        auth = OIDCAuthenticator(make_sessionmaker(engine), cfg)
        started = time.monotonic()
        with pytest.raises(AuthUnavailable):
            asyncio.run(auth.begin("http://127.0.0.1/cb", "/"))
        assert time.monotonic() - started < 5
    finally:
        engine.dispose()


def test_failed_callbacks_are_throttled(provider: OIDCProvider,
                                        make_hub: Callable[..., HubProcess]) -> None:
    small = make_hub(env={**hub_env(provider), "HIMALIA_LOGIN_MAX_FAILURES": "2"})
    statuses = [requests.get(small.url + "hub/oauth_callback?code=x&state=y",
                             allow_redirects=False, timeout=10).status_code for _ in range(3)]
    assert statuses == [400, 400, 429]
    r = requests.get(small.url + "hub/oauth_login", allow_redirects=False, timeout=10)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_cancel_at_the_provider_and_foreign_next(hub: HubProcess) -> None:
    _forget(hub, "alice")
    s = requests.Session()
    r = s.get(hub.url + "hub/oauth_login", timeout=30)  # follows to the provider's form
    assert 'name="password"' in r.text
    cancel = r.text.split('href="', 1)[1].split('"', 1)[0]
    url = sign_in(s, requests.compat.urljoin(r.url, cancel), "alice", _callback(hub))
    assert "error=access_denied" in url
    r = s.get(url, allow_redirects=False, timeout=30)
    _assert_clean_refusal(hub, r, s, "alice", 403, url)
    assert "did not sign you in" in r.text
    # next= is kept only when it is a local path (SECURITY.md 1)
    s = requests.Session()
    url = sign_in(s, hub.url + "hub/oauth_login?next=%2F%2Fevil.example%2F", "alice",
                  _callback(hub))
    r = s.get(url, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].startswith("/")
    assert not r.headers["Location"].startswith("//")
