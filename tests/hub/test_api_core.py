"""The core REST API against a real hub (through the real proxy): shapes, auth, errors."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.hubproc import HubProcess


def _err(r: requests.Response, status: int) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body == {"status": status, "message": body["message"]}
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in r.text
    return body


def test_root_and_health_are_public(hub: HubProcess) -> None:
    r = requests.get(hub.hub_api + "/", timeout=10)
    assert r.status_code == 200 and "version" in r.json()
    assert r.headers["X-JupyterHub-Version"]
    assert requests.get(hub.hub_api + "/health", timeout=10).status_code == 200
    assert requests.get(hub.url + "hub/health", timeout=10).status_code == 200


def test_missing_or_bad_token_is_403(hub: HubProcess) -> None:
    _err(requests.get(hub.hub_api + "/users", timeout=10), 403)
    _err(hub.api("GET", "/users", token="not-a-token"), 403)
    # tokens in the URL are not accepted
    r = requests.get(hub.hub_api + "/user", params={"token": hub.admin_token}, timeout=10)
    _err(r, 403)


def test_whoami_with_bearer_scheme(hub: HubProcess) -> None:
    r = requests.get(hub.hub_api + "/user", timeout=10,
                     headers={"Authorization": f"Bearer {hub.admin_token}"})
    assert r.status_code == 200
    me = r.json()
    assert me["name"] == "admin" and me["admin"] is True and me["kind"] == "user"
    assert "admin:users" in me["scopes"] and me["token_id"].startswith("a")


def test_user_lifecycle(hub: HubProcess) -> None:
    names = [f"bulk{i}{time.monotonic_ns() % 100000}" for i in range(3)]
    r = hub.api("POST", "/users", json={"usernames": names})
    assert r.status_code == 201, r.text
    assert sorted(u["name"] for u in r.json()) == sorted(names)
    _err(hub.api("POST", "/users", json={"usernames": names[:1]}), 409)
    _err(hub.api("POST", f"/users/{names[0]}"), 409)
    got = hub.api("GET", f"/users/{names[0]}").json()
    assert got["admin"] is False and got["server"] is None and got["servers"] == {}
    assert got["roles"] == ["user"]
    r = hub.api("PATCH", f"/users/{names[0]}", json={"admin": True})
    assert r.status_code == 200 and r.json()["admin"] is True
    r = hub.api("PATCH", f"/users/{names[1]}", json={"name": names[1] + "-renamed"})
    assert r.status_code == 200 and r.json()["name"] == names[1] + "-renamed"
    _err(hub.api("GET", f"/users/{names[1]}"), 404)
    assert hub.api("DELETE", f"/users/{names[2]}").status_code == 204
    _err(hub.api("GET", f"/users/{names[2]}"), 404)
    _err(hub.api("DELETE", f"/users/{names[2]}"), 404)


@pytest.mark.parametrize("name", ["", " ", "a/b", "x" * 300, "a\u0007b"])
def test_bad_usernames(hub: HubProcess, name: str) -> None:
    r = hub.api("POST", "/users", json={"usernames": [name]})
    _err(r, 400)


@pytest.mark.parametrize("body,ctype", [
    (b"{not json", "application/json"),
    (b"\xff\xfe{}", "application/json"),
    (b"[1, 2]", "application/json"),
    (b'{"usernames": ["a"], "colour": 1}', "application/json"),
    (b'{"usernames": "abc"}', "application/json"),
    (b'{"usernames": ["a"], "admin": "yes"}', "application/json"),
])
def test_bad_json_bodies_are_400(hub: HubProcess, body: bytes, ctype: str) -> None:
    _err(hub.api("POST", "/users", data=body, headers={"Content-Type": ctype}), 400)


def test_body_too_large_is_413(hub: HubProcess) -> None:
    big = json.dumps({"usernames": ["x" * 100] * 20000}).encode()
    _err(hub.api("POST", "/users", data=big), 413)


def test_list_and_pagination(hub: HubProcess) -> None:
    prefix = f"page{time.monotonic_ns() % 100000}x"
    names = [f"{prefix}{i:02d}" for i in range(7)]
    assert hub.api("POST", "/users", json={"usernames": names}).status_code == 201
    bare = hub.api("GET", "/users", params={"name_filter": prefix})
    assert isinstance(bare.json(), list) and len(bare.json()) == 7
    accept = {"Accept": "application/jupyterhub-pagination+json"}
    page = hub.api("GET", "/users", params={"name_filter": prefix, "limit": 3},
                   headers=accept).json()
    assert [u["name"] for u in page["items"]] == names[:3]
    meta = page["_pagination"]
    assert meta["total"] == 7 and meta["next"]["offset"] == 3
    past = hub.api("GET", "/users", params={"name_filter": prefix, "offset": 50},
                   headers=accept).json()
    assert past["items"] == [] and past["_pagination"]["next"] is None
    _err(hub.api("GET", "/users", params={"limit": "x"}), 400)
    _err(hub.api("GET", "/users", params={"state": "sleepy"}), 400)


def test_tokens_crud_and_revocation(hub: HubProcess) -> None:
    name, _ = hub.new_user("tok")
    r = hub.api("POST", f"/users/{name}/tokens", json={"note": "ci", "expires_in": 3600})
    assert r.status_code == 201, r.text
    tok = r.json()
    assert tok["token"] and tok["note"].startswith("ci") and tok["expires_at"]
    me = hub.api("GET", "/user", token=tok["token"]).json()
    assert me["name"] == name and me["admin"] is False
    listed = hub.api("GET", f"/users/{name}/tokens").json()["api_tokens"]
    assert tok["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed)
    assert hub.api("GET", f"/users/{name}/tokens/{tok['id']}").json()["id"] == tok["id"]
    assert hub.api("DELETE", f"/users/{name}/tokens/{tok['id']}").status_code == 204
    _err(hub.api("GET", "/user", token=tok["token"]), 403)
    _err(hub.api("GET", f"/users/{name}/tokens/{tok['id']}"), 404)
    _err(hub.api("POST", f"/users/{name}/tokens", json={"expires_in": -5}), 400)
    _err(hub.api("POST", f"/users/{name}/tokens", json={"scopes": ["no:such"]}), 400)


def test_token_cannot_exceed_owner(hub: HubProcess) -> None:
    name, _ = hub.new_user("esc")
    own = hub.api("POST", f"/users/{name}/tokens").json()["token"]
    r = hub.api("POST", f"/users/{name}/tokens", token=own, json={"scopes": ["admin:users"]})
    _err(r, 403)
    _err(hub.api("PATCH", f"/users/{name}", token=own, json={"admin": True}), 403)
    assert hub.api("GET", f"/users/{name}").json()["admin"] is False


def test_filtered_scope_reads_only_its_user(hub: HubProcess) -> None:
    alice, _ = hub.new_user("alice")
    bob, _ = hub.new_user("bob")
    tok = hub.make_token("admin", f"read:users!user={bob}")
    assert hub.api("GET", f"/users/{bob}", token=tok).status_code == 200
    _err(hub.api("GET", f"/users/{alice}", token=tok), 404)
    _err(hub.api("GET", "/users", token=tok), 403)  # reading is not listing (JupyterHub's rule)
    lister = hub.make_token("admin", f"read:users!user={bob}", f"list:users!user={bob}")
    listed = hub.api("GET", "/users", token=lister).json()
    assert [u["name"] for u in listed] == [bob]
    _err(hub.api("POST", "/users", token=tok, json={"usernames": ["zz" + alice]}), 403)


def test_a_users_own_token_cannot_list_users(hub: HubProcess) -> None:
    """Tools tell an admin token from a user's by this 403 (JupyterHub answers the same)."""
    name, _ = hub.new_user("own")
    r = hub.api("GET", "/users", token=hub.make_token(name))
    _err(r, 403)
    assert "list:users" in r.json()["message"]


def test_activity(hub: HubProcess) -> None:
    name, _ = hub.new_user("act")
    r = hub.api("POST", f"/users/{name}/activity",
                json={"last_activity": "2025-01-02T03:04:05Z"})
    assert r.status_code == 204
    assert hub.api("GET", f"/users/{name}").json()["last_activity"].startswith("2025-01-02T03:04")
    _err(hub.api("POST", f"/users/{name}/activity", json={"last_activity": "yesterday"}), 400)


def test_cookie_auth_needs_xsrf(hub: HubProcess) -> None:
    name, password = hub.new_user("ck")
    s = hub.login(name, password)
    _err(s.get(hub.hub_api + "/user", timeout=10), 403)
    xsrf = hub.xsrf_for(s)
    r = s.get(hub.hub_api + "/user", headers={"X-XSRFToken": xsrf}, timeout=10)
    assert r.status_code == 200 and r.json()["name"] == name and r.json()["session_id"]
    _err(s.post(hub.hub_api + f"/users/{name}/tokens", json={}, timeout=10), 403)
    r = s.post(hub.hub_api + f"/users/{name}/tokens", json={},
               headers={"X-XSRFToken": xsrf, "Sec-Fetch-Site": "cross-site"}, timeout=10)
    _err(r, 403)
    # a token bound to another session fails
    other = hub.login(name, password)
    _err(other.get(hub.hub_api + "/user", headers={"X-XSRFToken": xsrf}, timeout=10), 403)


def test_culler_scopes_see_activity_and_servers_only(hub: HubProcess) -> None:
    """JupyterHub's idle culler runs with these scopes; models are trimmed field by field."""
    name, _ = hub.new_user("cull")
    hub.api("POST", f"/users/{name}/activity", json={"last_activity": "2025-03-04T05:06:07Z"})
    tok = hub.make_token("admin", "list:users", "read:users:activity", "read:servers",
                         "delete:servers")
    got = hub.api("GET", f"/users/{name}", token=tok).json()
    assert got["last_activity"].startswith("2025-03-04T05:06")
    assert got["servers"] == {} and got["server"] is None
    assert "created" not in got and "groups" not in got
    listed = hub.api("GET", "/users", token=tok, params={"name_filter": name}).json()
    assert listed[0]["last_activity"] == got["last_activity"]
