"""``/shutdown``, ``/authorizations/token/<t>``, ``GET /users?sort=`` and the token model."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.hub import mockserver
from tests.hub.apitools import err, unique, write_config
from tests.hubproc import HubProcess


# --- /shutdown -------------------------------------------------------------------------------
def _proxy_pid(hub: HubProcess) -> int:
    return int(json.loads((hub.data_dir / "proxy.json").read_text())["pid"])


def test_shutdown_needs_the_scope_and_valid_input(hub: HubProcess) -> None:
    user, _ = hub.new_user("sd")
    err(hub.api("POST", "/shutdown", token=hub.make_token(user)), 403)
    err(hub.api("POST", "/shutdown", json={"proxy": "yes"}), 400)
    err(hub.api("POST", "/shutdown", json={"servers": 1}), 400)
    err(hub.api("POST", "/shutdown", json={"now": True}), 400)
    assert hub.api("GET", "/health").status_code == 200  # still running


@pytest.mark.parametrize("body,proxy_stops", [({}, True), ({"proxy": False}, False)])
def test_shutdown(make_hub: Any, body: dict[str, Any], proxy_stops: bool) -> None:
    hub = make_hub()
    pid = _proxy_pid(hub)
    r = hub.api("POST", "/shutdown", json=body)
    assert r.status_code == 202 and r.json() == {"message": "Shutting down Hub"}
    assert hub.proc is not None and hub.proc.wait(30) == 0  # a clean exit
    hub.stop()  # collects the rest of its output
    if proxy_stops:
        hub.wait_for(lambda: not mockserver.pid_alive(pid), timeout=15)
    else:
        assert mockserver.pid_alive(pid)
    assert "shutdown requested by admin" in hub.log_text()


def test_shutdown_with_servers(make_hub: Any, tmp_path: Any) -> None:
    config = write_config(tmp_path / "mock.toml")
    hub = make_hub(extra_args=["--config", str(config)])
    user, _ = hub.new_user("sds")
    assert hub.api("POST", f"/users/{user}/server").status_code in (201, 202)
    hub.wait_for(lambda: hub.api("GET", f"/users/{user}").json()["server"])
    pid = hub.api("GET", f"/users/{user}").json()["servers"][""]["state"]["pid"]
    assert hub.api("POST", "/shutdown", json={"servers": True, "proxy": False}).status_code == 202
    assert hub.proc is not None and hub.proc.wait(30) == 0
    assert not mockserver.pid_alive(pid)


# --- /authorizations/token/<token> -------------------------------------------------------------
def test_token_owner_lookup(hub: HubProcess) -> None:
    owner, _ = hub.new_user("tok")
    group = unique("tg")
    hub.api("POST", f"/groups/{group}", json={"users": [owner]})
    secret = hub.make_token(owner)
    model = hub.api("GET", f"/authorizations/token/{secret}").json()
    assert model["kind"] == "user" and model["name"] == owner and model["admin"] is False
    # another plain user may identify the owner (holding the token proves as much) but no more
    asker, _ = hub.new_user("ask")
    seen = hub.api("GET", f"/authorizations/token/{secret}", token=hub.make_token(asker)).json()
    assert seen == {"kind": "user", "name": owner, "groups": [group]}
    err(hub.api("GET", "/authorizations/token/not-a-real-token"), 404)
    hub.api("DELETE", f"/users/{owner}/tokens/" + hub.api(
        "GET", "/user", token=secret).json()["token_id"])
    err(hub.api("GET", f"/authorizations/token/{secret}"), 404)  # revoked
    hub.wait_for(lambda: "/authorizations/token/[secret]" in hub.log_text())
    assert secret not in hub.log_text()


def test_token_owner_lookup_needs_authentication(hub: HubProcess) -> None:
    import requests

    r = requests.get(hub.hub_api + f"/authorizations/token/{hub.admin_token}", timeout=10)
    err(r, 403)


# --- GET /users?sort= --------------------------------------------------------------------------
def test_users_sort(hub: HubProcess) -> None:
    prefix = unique("s")
    names = [f"{prefix}-{c}" for c in "cab"]
    assert hub.api("POST", "/users", json={"usernames": names}).status_code == 201
    now = datetime.now(UTC)
    for i, name in enumerate(names):  # c oldest activity, b newest
        stamp = (now - timedelta(minutes=10 - i)).isoformat()
        assert hub.api("POST", f"/users/{name}/activity",
                       json={"last_activity": stamp}).status_code == 204

    def listed(sort: str) -> list[str]:
        got = hub.api("GET", "/users", params={"sort": sort, "name_filter": prefix}).json()
        return [u["name"] for u in got]

    assert listed("id") == names
    assert listed("-id") == names[::-1]
    assert listed("name") == sorted(names)
    assert listed("-name") == sorted(names, reverse=True)
    assert listed("last_activity") == names
    assert listed("-last_activity") == names[::-1]
    err(hub.api("GET", "/users", params={"sort": "admin"}), 400)
    err(hub.api("GET", "/users", params={"sort": "--name"}), 400)


# --- the token model ---------------------------------------------------------------------------
def test_token_model_fields(hub: HubProcess) -> None:
    user, _ = hub.new_user("tm")
    before = time.time()
    r = hub.api("POST", f"/users/{user}/tokens",
                json={"expires_in": 3600, "note": "ci", "scopes": [f"read:users!user={user}"]})
    assert r.status_code == 201, r.text
    model = r.json()
    assert set(model) >= {"token", "id", "scopes", "created", "expires_at", "note",
                          "last_activity", "user", "kind", "roles"}
    assert model["id"].startswith("a") and model["scopes"] == [f"read:users!user={user}"]
    assert model["note"].startswith("ci") and model["last_activity"] is None
    expires = datetime.fromisoformat(model["expires_at"].replace("Z", "+00:00"))
    assert 3500 < expires.timestamp() - before < 3700
    got = hub.api("GET", f"/users/{user}/tokens/{model['id']}").json()
    assert "token" not in got and got["id"] == model["id"]
    err(hub.api("POST", f"/users/{user}/tokens", json={"expires_in": -1}), 400)
    err(hub.api("POST", f"/users/{user}/tokens", json={"scopes": ["no:such"]}), 400)
    err(hub.api("POST", f"/users/{user}/tokens", json={"roles": [3]}), 400)


def test_token_lifetime_is_capped(make_hub: Any) -> None:
    hub = make_hub(extra_args=["--token-max-age-days", "1"])
    user, _ = hub.new_user("cap")
    day = 86400
    for body in ({}, {"expires_in": 10 * day}, {"expires_in": 60}):
        before = time.time()
        model = hub.api("POST", f"/users/{user}/tokens", json=body).json()
        expires = datetime.fromisoformat(model["expires_at"].replace("Z", "+00:00"))
        wanted = min(body.get("expires_in", day), day)
        assert abs(expires.timestamp() - before - wanted) < 60, (body, model["expires_at"])
