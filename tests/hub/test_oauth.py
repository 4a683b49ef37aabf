"""The OAuth2 provider (CONTRACTS §3) against a real hub, through the real proxy.

Clients are registered straight in the hub's SQLite database (as the server manager does when a
server starts), except in the last test, where a real single-user server does the whole dance.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.hubproc import HubProcess

VERIFIER = secrets.token_urlsafe(48)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _sql(hub: HubProcess, query: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(hub.data_dir / "himalia.sqlite", timeout=30)) as conn, conn:
        conn.execute("PRAGMA busy_timeout=30000")
        return conn.execute(query, args).fetchall()


@dataclass
class Registered:
    """A client registered for ``owner``'s default server, and a login of that owner."""

    owner: str
    password: str
    client_id: str
    secret: str
    redirect_uri: str


def register(hub: HubProcess) -> Registered:
    owner, password = hub.new_user("oa")
    client_id, secret = f"jupyterhub-user-{owner}", secrets.token_urlsafe(32)
    redirect = f"{hub.base_path}user/{owner}/oauth_callback"
    ((uid,),) = _sql(hub, "SELECT id FROM users WHERE name = ?", (owner,))
    _sql(hub, "INSERT INTO servers (user_id, name, state, user_options) VALUES (?, '', '{}', "
              "'{}')", (uid,))
    ((sid,),) = _sql(hub, "SELECT id FROM servers WHERE user_id = ?", (uid,))
    scopes = json.dumps([f"access:servers!server={owner}/", f"access:servers!user={owner}"])
    _sql(hub, "INSERT INTO oauth_clients (identifier, secret_hash, redirect_uri, description, "
              "allowed_scopes, server_id) VALUES (?, ?, ?, ?, ?, ?)",
         (client_id, hashlib.sha256(secret.encode()).hexdigest(), redirect,
          f"Server at {hub.base_path}user/{owner}/", scopes, sid))
    return Registered(owner, password, client_id, secret, redirect)


def authorize_url(hub: HubProcess, reg: Registered, **params: str) -> str:
    query = {"client_id": reg.client_id, "redirect_uri": reg.redirect_uri,
             "response_type": "code", "state": "s-123", "code_challenge": s256(VERIFIER),
             "code_challenge_method": "S256", **params}
    return hub.url + "hub/api/oauth2/authorize?" + urlencode(query)


def get_code(hub: HubProcess, s: requests.Session, reg: Registered, **params: str) -> str:
    r = s.get(authorize_url(hub, reg, **params), allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    location = urlsplit(r.headers["Location"])
    assert location.path == reg.redirect_uri and not location.netloc
    query = parse_qs(location.query)
    assert query["state"] == ["s-123"]
    return query["code"][0]


def exchange(hub: HubProcess, reg: Registered, code: str, **overrides: str
             ) -> requests.Response:
    """The server's side: straight to the hub (as JUPYTERHUB_API_URL is), form-encoded."""
    form = {"client_id": reg.client_id, "client_secret": reg.secret,
            "grant_type": "authorization_code", "code": code, "redirect_uri": reg.redirect_uri,
            "code_verifier": VERIFIER, **overrides}
    return requests.post(hub.hub_url + hub.base_path + "hub/api/oauth2/token", timeout=30,
                         data={k: v for k, v in form.items() if v != "<omit>"})


def whoami(hub: HubProcess, token: str) -> requests.Response:
    return requests.get(hub.hub_url + hub.base_path + "hub/api/user", timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


def oauth_error(r: requests.Response, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error and body["status"] == status and body["message"]
    assert r.headers["Cache-Control"] == "no-store"


@pytest.fixture(scope="module")
def reg(hub: HubProcess) -> Registered:
    """One client per module (and xdist worker); each test logs in afresh and uses its own
    codes, so tests do not disturb each other."""
    return register(hub)


@pytest.fixture
def owner_session(hub: HubProcess, reg: Registered) -> requests.Session:
    return hub.login(reg.owner, reg.password)


def test_full_code_flow_with_pkce(hub: HubProcess, reg: Registered,
                                  owner_session: requests.Session) -> None:
    code = get_code(hub, owner_session, reg)
    r = exchange(hub, reg, code)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert f"access:servers!server={reg.owner}/" in body["scope"].split()
    me = whoami(hub, body["access_token"])
    assert me.status_code == 200, me.text
    model = me.json()
    assert model["name"] == reg.owner and model["token_id"].startswith("o")
    assert f"access:servers!server={reg.owner}/" in model["scopes"]
    assert f"access:servers!user={reg.owner}" in model["scopes"]
    # an OAuth token is for identifying, not for acting as the user
    assert hub.api("GET", f"/users/{reg.owner}/tokens", token=body["access_token"]
                   ).status_code == 403
    # secrets at rest: neither the code nor the token is in the database
    raw = b"".join(p.read_bytes() for p in hub.data_dir.glob("himalia.sqlite*"))
    assert code.encode() not in raw and body["access_token"].encode() not in raw
    # nor in the hub's log (which runs at DEBUG in tests)
    assert code not in hub.log_text() and body["access_token"] not in hub.log_text()
    assert reg.secret not in hub.log_text()


@pytest.mark.parametrize("bad", ["https://evil.example/cb", "//evil.example/cb",
                                 "{base}user/{owner}/oauth_callback/x",
                                 "{base}user/{owner}/oauth_callback?next=//evil.example"])
def test_wrong_redirect_uri_is_an_error_page(hub: HubProcess, reg: Registered,
                                             owner_session: requests.Session, bad: str) -> None:
    uri = bad.format(base=hub.base_path, owner=reg.owner)
    r = owner_session.get(authorize_url(hub, reg, redirect_uri=uri), allow_redirects=False,
                          timeout=30)
    assert r.status_code == 400 and "Location" not in r.headers
    assert "text/html" in r.headers["Content-Type"] and "redirect_uri" in r.text
    assert "evil.example" not in r.text


def test_unknown_client_is_an_error_page(hub: HubProcess, reg: Registered,
                                         owner_session: requests.Session) -> None:
    r = owner_session.get(authorize_url(hub, reg, client_id="jupyterhub-user-nobody"),
                          allow_redirects=False, timeout=30)
    assert r.status_code == 400 and "Location" not in r.headers
    assert "Unknown OAuth client" in r.text


def test_reused_code_fails_and_revokes(hub: HubProcess, reg: Registered,
                                       owner_session: requests.Session) -> None:
    code = get_code(hub, owner_session, reg)
    first = exchange(hub, reg, code)
    assert first.status_code == 200
    token = first.json()["access_token"]
    assert whoami(hub, token).status_code == 200
    oauth_error(exchange(hub, reg, code), 400, "invalid_grant")
    assert whoami(hub, token).status_code == 403


def test_expired_code_fails(hub: HubProcess, reg: Registered,
                            owner_session: requests.Session) -> None:
    code = get_code(hub, owner_session, reg)
    _sql(hub, "UPDATE oauth_codes SET expires_at = '2000-01-01 00:00:00.000000' "
              "WHERE hashed = ?", (hashlib.sha256(code.encode()).hexdigest(),))
    oauth_error(exchange(hub, reg, code), 400, "invalid_grant")


def test_wrong_client_secret(hub: HubProcess, reg: Registered,
                             owner_session: requests.Session) -> None:
    code = get_code(hub, owner_session, reg)
    oauth_error(exchange(hub, reg, code, client_secret="x" + reg.secret), 401, "invalid_client")
    oauth_error(exchange(hub, reg, code, client_secret="<omit>"), 401, "invalid_client")
    # HTTP Basic works too, and the code survived the failed attempts
    basic = base64.b64encode(f"{reg.client_id}:{reg.secret}".encode()).decode()
    r = requests.post(hub.hub_url + hub.base_path + "hub/api/oauth2/token", timeout=30,
                      headers={"Authorization": f"Basic {basic}"},
                      data={"grant_type": "authorization_code", "code": code,
                            "redirect_uri": reg.redirect_uri, "code_verifier": VERIFIER})
    assert r.status_code == 200, r.text


def test_wrong_pkce_verifier(hub: HubProcess, reg: Registered,
                             owner_session: requests.Session) -> None:
    code = get_code(hub, owner_session, reg)
    oauth_error(exchange(hub, reg, code, code_verifier=secrets.token_urlsafe(48)), 400,
                "invalid_grant")
    code = get_code(hub, owner_session, reg)
    oauth_error(exchange(hub, reg, code, code_verifier="<omit>"), 400, "invalid_request")


def test_other_user_is_denied(hub: HubProcess, reg: Registered) -> None:
    codes = _sql(hub, "SELECT count(*) FROM oauth_codes WHERE client_id = ?", (reg.client_id,))
    mallory, password = hub.new_user("mal")
    s = hub.login(mallory, password)
    r = s.get(authorize_url(hub, reg), allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "Location" not in r.headers
    assert "text/html" in r.headers["Content-Type"]
    # nor does the consent form's POST get around it
    xsrf = hub.xsrf_for(s)
    r = s.post(authorize_url(hub, reg), data={"_xsrf": xsrf}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert _sql(hub, "SELECT count(*) FROM oauth_codes WHERE client_id = ?",
                (reg.client_id,)) == codes


def test_not_logged_in_goes_to_login_and_back(hub: HubProcess, reg: Registered) -> None:
    s = requests.Session()
    url = authorize_url(hub, reg)
    r = s.get(url, allow_redirects=False, timeout=30)
    assert r.status_code == 302
    login = urlsplit(r.headers["Location"])
    assert login.path == hub.base_path + "hub/login" and not login.netloc
    (next_url,) = parse_qs(login.query)["next"]
    assert next_url.startswith("/") and not next_url.startswith("//")
    assert next_url == url[len(hub.public):]
    s.get(hub.url + "hub/login", timeout=30)
    r = s.post(hub.url + "hub/login?" + urlencode({"next": next_url}), allow_redirects=False,
               data={"username": reg.owner, "password": reg.password,
                     "_xsrf": s.cookies.get("_xsrf") or ""}, timeout=30)
    assert r.status_code == 302 and r.headers["Location"] == next_url
    r = s.get(hub.public + next_url, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"].startswith(reg.redirect_uri + "?")


def test_token_cannot_authorize_without_browser_login(hub: HubProcess, reg: Registered) -> None:
    token = hub.make_token(reg.owner)
    r = requests.get(authorize_url(hub, reg), headers={"Authorization": f"token {token}"},
                     allow_redirects=False, timeout=30)
    assert r.status_code == 403 and "Location" not in r.headers


def test_logout_revokes_oauth_tokens(hub: HubProcess, reg: Registered,
                                     owner_session: requests.Session) -> None:
    token = exchange(hub, reg, get_code(hub, owner_session, reg)).json()["access_token"]
    assert whoami(hub, token).status_code == 200
    owner_session.get(hub.url + "hub/logout", timeout=30)
    r = whoami(hub, token)
    assert r.status_code == 403 and r.json()["status"] == 403


def test_token_endpoint_errors_are_json(hub: HubProcess, reg: Registered) -> None:
    url = hub.hub_url + hub.base_path + "hub/api/oauth2/token"
    r = requests.get(url, timeout=30)
    assert r.status_code == 405 and r.json()["status"] == 405
    oauth_error(requests.post(url, data={"grant_type": "password"}, timeout=30), 400,
                "unsupported_grant_type")
    garbage = requests.post(url, data=b"code=\xff\xfe<>", timeout=30,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert garbage.status_code == 400 and garbage.json()["status"] == 400
    oauth_error(exchange(hub, reg, "no-such-code"), 400, "invalid_grant")
    assert "Traceback" not in hub.log_text()


def _consent_form(page: str) -> tuple[str, str]:
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page)
    assert action and xsrf, page
    return action.group(1).replace("&amp;", "&"), xsrf.group(1)


def test_admin_access_needs_the_setting(hub: HubProcess, reg: Registered) -> None:
    admin, password = hub.new_user("adm", admin=True)
    r = hub.login(admin, password).get(authorize_url(hub, reg), allow_redirects=False,
                                       timeout=30)
    assert r.status_code == 403


@pytest.mark.slow
def test_admin_consent_with_admin_access(make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub(extra_args=["--admin-access"])
    reg = register(hub)
    admin, password = hub.new_user("adm", admin=True)
    s = hub.login(admin, password)
    page = s.get(authorize_url(hub, reg), allow_redirects=False, timeout=30)
    assert page.status_code == 200 and "Authorize access" in page.text
    assert f"{reg.owner}/" in page.text
    action, xsrf = _consent_form(page.text)
    assert s.post(hub.public + action, allow_redirects=False, timeout=30).status_code == 403
    r = s.post(hub.public + action, data={"_xsrf": xsrf}, allow_redirects=False, timeout=30,
               headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 302, r.text
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    token = exchange(hub, reg, code).json()["access_token"]
    model = whoami(hub, token).json()
    assert model["name"] == admin and f"access:servers!server={reg.owner}/" in model["scopes"]
    cross = s.post(hub.public + action, data={"_xsrf": xsrf}, allow_redirects=False,
                   timeout=30, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403


@pytest.mark.slow
def test_real_server_logs_its_owner_in_and_keeps_others_out(hub: HubProcess) -> None:
    """A spawned single-user server's own client (registered by the server manager) works end
    to end: redirects, code, token exchange, cookie; another user stops at the hub's 403."""
    owner, password = hub.new_user("own")
    other, other_password = hub.new_user("oth")
    assert hub.api("POST", f"/users/{owner}/server").status_code in (201, 202)
    try:
        hub.wait_for(lambda: hub.api("GET", f"/users/{owner}").json()["servers"]
                     .get("", {}).get("ready"), timeout=60)
        s = hub.login(owner, password)
        r = s.get(hub.url + f"user/{owner}/lab", timeout=60)
        assert r.status_code == 200 and "JupyterLab" in r.text
        steps = [urlsplit(h.headers["Location"]).path for h in r.history]
        assert hub.base_path + "hub/api/oauth2/authorize" in steps
        assert hub.base_path + f"user/{owner}/oauth_callback" in steps
        assert s.cookies.get(f"jupyterhub-user-{owner}")
        intruder = hub.login(other, other_password)
        r = intruder.get(hub.url + f"user/{owner}/lab", timeout=60)
        assert r.status_code == 403
        assert urlsplit(r.url).path == hub.base_path + "hub/api/oauth2/authorize"
        assert not intruder.cookies.get(f"jupyterhub-user-{owner}")
    finally:
        hub.api("DELETE", f"/users/{owner}/server")
