"""``himalia-singleuser`` as a real process behind the fake hub: start-up, OAuth, access
control, activity.

Browser-like requests go through the fake hub's proxy, so hub and server share one origin
(with a base URL containing a space and ``@``) exactly as behind the real proxy.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from singleuser.app import main
from singleuser.oauth import pkce_challenge
from tests.singleuser.conftest import PASS_ENV, Browser, SingleUser, Spawner, free_port


def set_cookies(response: requests.Response) -> list[str]:
    """The raw Set-Cookie headers of one response."""
    return list(response.raw.headers.getlist("Set-Cookie"))


def cookie_attrs(header: str) -> dict[str, str]:
    """``{"name": ..., "value": ..., "path": ..., "httponly": "", ...}`` of one Set-Cookie."""
    first, *attrs = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    out = {"name": name, "value": value}
    for attr in attrs:
        key, _, val = attr.partition("=")
        out[key.lower()] = val
    return out


def signed_cookie_payload(value: str) -> str:
    """The (base64-decoded) payload of a tornado v2 signed cookie."""
    fields = value.strip('"').split("|")
    return base64.b64decode(fields[4].split(":", 1)[1]).decode()


def login(server: SingleUser, browser: Browser, user: str = "alice") -> requests.Session:
    """A session logged in to ``server`` through the fake hub's OAuth as ``user``."""
    session = browser(user)
    response = session.get(server.public_url + "lab", timeout=20)
    assert response.status_code == 200, response.text[:500]
    return session


def test_readiness_probe_needs_no_auth(alice: SingleUser) -> None:
    response = requests.get(alice.direct_url + "api", timeout=5)
    assert response.status_code == 200
    assert "version" in response.json()
    assert not any(c.startswith(alice.client_id) for c in set_cookies(response))


def test_unauthenticated_page_redirects_to_hub_authorize(
    alice: SingleUser, browser: Browser
) -> None:
    session = browser(None)
    first = session.get(alice.public_url + "lab?reset", allow_redirects=False, timeout=10)
    assert first.status_code == 302
    assert first.headers["Location"].startswith(alice.prefix + "login?next=")

    second = session.get(alice.hub.url + first.headers["Location"], allow_redirects=False,
                         timeout=10)
    assert second.status_code == 302
    location = urlsplit(second.headers["Location"])
    assert location.path == "/my%20hub@/hub/api/oauth2/authorize"  # relative, via the proxy
    assert not location.netloc
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["client_id"] == "jupyterhub-user-alice"
    assert query["redirect_uri"] == alice.prefix + "oauth_callback"
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256"

    (state_cookie,) = [cookie_attrs(c) for c in set_cookies(second)]
    assert state_cookie["name"] == "jupyterhub-user-alice-oauth-state"
    assert state_cookie["path"] == alice.prefix
    assert "httponly" in state_cookie and state_cookie["samesite"] == "Lax"
    saved = json.loads(signed_cookie_payload(state_cookie["value"]))
    assert saved["state"] == query["state"]
    assert saved["next"] == alice.prefix + "lab?reset"
    assert query["code_challenge"] == pkce_challenge(saved["verifier"])
    assert saved["verifier"] not in second.headers["Location"]


def test_oauth_login_lands_on_lab(alice: SingleUser, browser: Browser) -> None:
    session = browser("alice")
    response = session.get(alice.public_url + "lab", timeout=20)
    assert response.status_code == 200
    assert response.url == alice.public_url + "lab"
    hops = [urlsplit(r.headers["Location"]).path for r in response.history]
    assert hops == [alice.prefix + "login", "/my%20hub@/hub/api/oauth2/authorize",
                    alice.prefix + "oauth_callback", alice.prefix + "lab"]

    callback = response.history[3]
    cookies = {c["name"]: c for c in map(cookie_attrs, set_cookies(callback))}
    token_cookie = cookies["jupyterhub-user-alice"]
    assert token_cookie["path"] == alice.prefix
    assert "httponly" in token_cookie and token_cookie["samesite"] == "Lax"
    assert "expires" not in token_cookie and "secure" not in token_cookie
    assert cookies["jupyterhub-user-alice-oauth-state"]["value"] in ('""', "")  # cleared

    page = re.search(r'<script id="jupyter-config-data"[^>]*>(.*?)</script>', response.text,
                     re.DOTALL)
    assert page is not None
    config = json.loads(page.group(1))
    assert config["baseUrl"] == alice.prefix
    assert config["hubPrefix"] == "/my%20hub@/hub/"
    assert config["hubUser"] == "alice"
    assert config["token"] == ""

    me = session.get(alice.public_url + "api/me", timeout=10)
    assert me.status_code == 200 and me.json()["identity"]["username"] == "alice"
    again = session.get(alice.public_url + "lab", timeout=10)
    assert again.status_code == 200 and not again.history


def test_wrong_or_missing_state_is_rejected(alice: SingleUser, browser: Browser) -> None:
    session = browser("alice")
    start = session.get(alice.public_url + "login", allow_redirects=False, timeout=10)
    assert start.status_code == 302
    wrong = session.get(alice.public_url + "oauth_callback?code=abc&state=wrong", timeout=10)
    assert wrong.status_code == 400
    assert "state mismatch" in wrong.text
    assert any(c.startswith('jupyterhub-user-alice-oauth-state=""') for c in set_cookies(wrong))
    assert not any(c.startswith("jupyterhub-user-alice=") for c in set_cookies(wrong))

    fresh = requests.get(alice.public_url + "oauth_callback?code=abc&state=abc", timeout=10)
    assert fresh.status_code == 400
    denied = requests.get(alice.public_url + "oauth_callback?error=access_denied", timeout=10)
    assert denied.status_code == 403


def test_other_user_gets_403_page_not_a_redirect_loop(alice: SingleUser, browser: Browser) -> None:
    session = browser("bob")
    response = session.get(alice.public_url + "lab", timeout=20)
    assert response.status_code == 403
    assert len(response.history) == 3  # lab → login → hub authorize → callback: 403
    assert "text/html" in response.headers["Content-Type"]
    assert "bob may not access this server" in response.text
    assert not any(c.startswith("jupyterhub-user-alice=") for c in set_cookies(response))
    assert "jupyterhub-user-alice" not in session.cookies


def test_token_header_auth(alice: SingleUser) -> None:
    hub = alice.hub
    alice_token = hub.add_token("alice", ["access:servers!server=alice/"])
    bob_token = hub.add_token("bob", ["access:servers!user=bob", "read:users"])
    admin_token = hub.add_token("root", ["access:servers", "admin:users"])
    other_server = hub.add_token("alice", ["access:servers!server=alice/gpu"])
    api = alice.direct_url + "api/contents"

    ok = requests.get(api, headers={"Authorization": f"token {alice_token}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["type"] == "directory"
    ok = requests.get(api, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
    assert ok.status_code == 200
    # token-authenticated writes need no XSRF token
    created = requests.post(api, json={"type": "notebook"},
                            headers={"Authorization": f"token {alice_token}"}, timeout=10)
    assert created.status_code == 201, created.text

    for token in (bob_token, other_server):
        denied = requests.get(api, headers={"Authorization": f"token {token}"}, timeout=10)
        assert denied.status_code == 403
        assert denied.headers["Content-Type"].startswith("application/json")
        page = requests.get(alice.direct_url + "lab", headers={"Authorization": f"token {token}"},
                            allow_redirects=False, timeout=10)
        assert page.status_code == 403 and "Location" not in page.headers

    bogus = requests.get(api, headers={"Authorization": "token nope"}, timeout=10)
    assert bogus.status_code == 403
    assert requests.get(api + "?token=" + alice_token, timeout=10).status_code == 403


def test_unauthenticated_api_gets_403_json(alice: SingleUser) -> None:
    session_id = "0b4c3b3a-1111-4000-8000-000000000000"
    for method, path in [("GET", "api/contents"), ("GET", "api/kernels"),
                         ("POST", "api/contents"), ("DELETE", f"api/sessions/{session_id}"),
                         ("GET", "api/me"), ("GET", "lab/api/settings")]:
        response = requests.request(method, alice.direct_url + path, allow_redirects=False,
                                    timeout=10)
        assert response.status_code == 403, (method, path, response.status_code)
        assert "Location" not in response.headers
        assert response.headers["Content-Type"].startswith("application/json")


def test_cookie_auth_needs_xsrf(alice: SingleUser, browser: Browser) -> None:
    session = login(alice, browser)
    api = alice.public_url + "api/contents"
    assert session.post(api, json={"type": "file"}, timeout=10).status_code == 403
    xsrf = session.cookies.get("_xsrf", path=alice.prefix)
    assert xsrf
    created = session.post(api, json={"type": "file"}, headers={"X-XSRFToken": xsrf},
                           timeout=10)
    assert created.status_code == 201, created.text


def test_logout_clears_cookie_and_goes_to_hub(alice: SingleUser, browser: Browser) -> None:
    session = login(alice, browser)
    out = session.get(alice.public_url + "logout", allow_redirects=False, timeout=10)
    assert out.status_code == 302
    assert out.headers["Location"] == "/my%20hub@/hub/logout"
    assert any(c.startswith('jupyterhub-user-alice=""') for c in set_cookies(out))
    assert session.get(alice.public_url + "api/me", timeout=10).status_code == 403


def test_activity_is_reported(alice: SingleUser) -> None:
    requests.get(alice.direct_url + "api/contents",
                 headers={"Authorization": f"token {alice.server_token}"}, timeout=10)
    deadline = time.monotonic() + 10
    while not alice.hub.activity and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alice.hub.activity, alice.log()
    name, body = alice.hub.activity[-1]
    assert name == "alice"
    assert set(body) == {"servers", "last_activity"}
    assert set(body["servers"]) == {""}
    stamp = body["servers"][""]["last_activity"]
    assert stamp == body["last_activity"] and stamp.endswith("Z")
    assert datetime.fromisoformat(stamp).tzinfo is not None


def test_no_secrets_in_the_log(alice: SingleUser, browser: Browser) -> None:
    login(alice, browser)
    log = alice.log()
    assert "logged in through the hub" in log
    secrets = [alice.server_token, *alice.hub.state.tokens]
    assert not [s for s in secrets if s in log]
    assert "code=[secret]" in log and "state=[secret]" in log


def test_hub_unreachable_at_start_exits_nonzero(spawn: Spawner, fake_hub: object) -> None:
    from tests.singleuser.fakehub import FakeHub

    assert isinstance(fake_hub, FakeHub)
    dead_api = f"http://127.0.0.1:{free_port()}/hub/api"
    start = time.monotonic()
    server = spawn(fake_hub, wait=False, JUPYTERHUB_API_URL=dead_api)
    returncode = server.proc.wait(30)
    elapsed = time.monotonic() - start
    assert returncode == 1
    assert elapsed < 15
    assert f"cannot start: hub API {dead_api} did not answer 2xx" in server.log()


def test_bad_environment_exits_2() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k in PASS_ENV}
    env["JUPYTERHUB_API_URL"] = "not a url"
    result = subprocess.run([sys.executable, "-m", "singleuser"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "JUPYTERHUB_API_TOKEN is not set" in result.stderr
    assert "JUPYTERHUB_API_URL: must be an absolute http(s) URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_environment(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--help"])
    out = capsys.readouterr().out
    assert "* JUPYTERHUB_API_TOKEN" in out and "JUPYTERHUB_ACTIVITY_INTERVAL" in out


async def test_kernel_websocket_only_for_the_owner(alice: SingleUser) -> None:
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    owner = {"Authorization": f"token {alice.hub.add_token('alice', ['access:servers'])}"}
    other = {"Authorization": f"token {alice.hub.add_token('bob', ['access:servers!user=bob'])}"}
    kernel = requests.post(alice.direct_url + "api/kernels", json={}, headers=owner, timeout=30)
    assert kernel.status_code == 201, kernel.text
    ws_base = alice.direct_url.replace("http://", "ws://")
    channels = f"{ws_base}api/kernels/{kernel.json()['id']}/channels"
    try:
        for headers in (other, {}):
            with pytest.raises(HTTPClientError) as info:
                await websocket_connect(HTTPRequest(channels, headers=headers))
            assert info.value.code == 403
        with pytest.raises(HTTPClientError) as info:
            await websocket_connect(HTTPRequest(f"{ws_base}terminals/websocket/1"))
        assert info.value.code == 403
        conn = await websocket_connect(HTTPRequest(channels, headers=owner))
        conn.close()
        # wait for the closing handshake, so no socket outlives the test's event loop
        assert await asyncio.wait_for(conn.read_message(), 10) is None
    finally:
        requests.delete(alice.direct_url + f"api/kernels/{kernel.json()['id']}", headers=owner,
                        timeout=30)


def test_cookies_planted_at_root_do_not_break_login(alice: SingleUser, browser: Browser) -> None:
    # another server on the same origin can set cookies with our names for path "/"
    session = browser("alice")
    for name in ("jupyterhub-user-alice", "jupyterhub-user-alice-oauth-state"):
        session.cookies.set(name, "2|1:0|10:1700000000|4:junk|8:anVuaw==|deadbeef", path="/")
    response = session.get(alice.public_url + "lab", timeout=20)
    assert response.status_code == 200, response.text[:300]
    assert len(response.history) == 4
    me = session.get(alice.public_url + "api/me", timeout=10)
    assert me.status_code == 200 and me.json()["identity"]["username"] == "alice"


def test_oauth_error_parameter_is_not_reflected_raw(alice: SingleUser) -> None:
    response = requests.get(alice.public_url + "oauth_callback",
                            params={"error": '"><img src=x onerror=alert(1)>\nforged'},
                            timeout=10)
    assert response.status_code == 403
    assert "onerror" not in response.text and "forged" not in response.text
    assert "unknown error" in response.text
    assert "\nforged" not in alice.log()  # the access log has it URL-encoded only


def test_hub_settings_win_over_user_config_and_flags(spawn: Spawner, fake_hub: object) -> None:
    from tests.singleuser.fakehub import FakeHub

    assert isinstance(fake_hub, FakeHub)
    config = "\n".join([
        "c.ServerApp.base_url = '/elsewhere/'",
        "c.ServerApp.allow_unauthenticated_access = True",
        "c.ServerApp.identity_provider_class = 'jupyter_server.auth.IdentityProvider'",
        "c.ServerApp.tornado_settings = {'headers': {'X-From-User-Config': 'kept'}}",
    ])
    server = spawn(fake_hub, config=config, args=("--ServerApp.port=1", "--ServerApp.ip=0.0.0.0"))
    response = requests.get(server.direct_url + "api/contents", timeout=10)
    assert response.status_code == 403  # still the hub's authentication, prefix and port
    assert response.headers.get("X-From-User-Config") == "kept"
    token = fake_hub.add_token("alice", ["access:servers!user=alice"])
    ok = requests.get(server.direct_url + "api/contents", timeout=10,
                      headers={"Authorization": f"token {token}"})
    assert ok.status_code == 200
    assert "Jupyter Server" in server.log() and "elsewhere" not in server.log()
