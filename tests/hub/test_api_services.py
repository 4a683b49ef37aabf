"""``/hub/api/services`` and service tokens: configured external services, their models,
their tokens authenticating as the service with exactly the scopes of their roles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub.apitools import err, write_config
from tests.hubproc import HubProcess, running

CULL_TOKEN = "cull-token-0123456789abcdef"
BOARD_TOKEN = "board-token-0123456789abcdef"
ROOT_TOKEN = "root-token-0123456789abcdef"
SETTINGS: dict[str, Any] = {
    "services": [
        {"name": "culler", "api_token": CULL_TOKEN, "info": {"owner": "ops"}},
        {"name": "board", "url": "http://127.0.0.1:9", "api_token": BOARD_TOKEN,
         "display": False},
        {"name": "root", "api_token": ROOT_TOKEN, "admin": True},
        {"name": "docs", "url": "http://127.0.0.1:10"},
    ],
    "roles": [
        {"name": "culling", "scopes": ["list:users", "admin:servers", "users:activity"],
         "services": ["culler"]},
        {"name": "watching", "scopes": ["read:services", "read:hub"], "services": ["board"],
         "users": ["viewer"]},
    ],
}


@pytest.fixture(scope="module")
def shub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    data = tmp_path_factory.mktemp("services")
    config = write_config(data.parent / f"{data.name}.toml", **SETTINGS)
    yield from running(data, extra_args=["--config", str(config)])


def test_list_and_get(shub: HubProcess) -> None:
    listed = shub.api("GET", "/services").json()
    assert sorted(listed) == ["board", "culler", "docs", "root"]
    board = listed["board"]
    assert board == {
        "kind": "service", "name": "board", "admin": False, "url": "http://127.0.0.1:9",
        "prefix": shub.raw_base.replace(" ", "%20") + "services/board/", "command": [],
        "pid": 0, "info": {}, "display": False, "roles": ["watching"],
    }
    assert listed["root"]["roles"] == ["admin"] and listed["root"]["admin"] is True
    assert listed["culler"]["prefix"] == "" and listed["culler"]["info"] == {"owner": "ops"}
    assert shub.api("GET", "/services/culler").json() == listed["culler"]
    err(shub.api("GET", "/services/nope"), 404)
    assert CULL_TOKEN not in json.dumps(listed)


def test_scopes_for_reading_services(shub: HubProcess) -> None:
    user, _ = shub.new_user("plain")
    token = shub.make_token(user)
    err(shub.api("GET", "/services", token=token), 403)
    err(shub.api("GET", "/services/culler", token=token), 404)
    viewer = shub.make_token("viewer")  # has read:services through the watching role
    assert sorted(shub.api("GET", "/services", token=viewer).json()) == [
        "board", "culler", "docs", "root"]
    names_only = shub.make_token("admin", "list:services")
    assert shub.api("GET", "/services/docs", token=names_only).json() == {
        "kind": "service", "name": "docs", "admin": False}


def test_service_token_identifies_the_service(shub: HubProcess) -> None:
    me = shub.api("GET", "/user", token=CULL_TOKEN).json()
    assert me["kind"] == "service" and me["name"] == "culler" and me["roles"] == ["culling"]
    assert {"list:users", "admin:servers", "servers", "users:activity"} <= set(me["scopes"])
    assert "admin:users" not in me["scopes"] and me["token_id"].startswith("a")
    # what the culler needs: list users with their servers, stop servers
    assert shub.api("GET", "/users", token=CULL_TOKEN).status_code == 200
    user, _ = shub.new_user("c")
    err(shub.api("DELETE", f"/users/{user}", token=CULL_TOKEN), 403)
    err(shub.api("POST", "/users", token=CULL_TOKEN, json={"usernames": ["x"]}), 403)
    assert shub.api("DELETE", f"/users/{user}/server", token=CULL_TOKEN).status_code == 204
    err(shub.api("GET", "/info", token=CULL_TOKEN), 403)


def test_admin_service(shub: HubProcess) -> None:
    me = shub.api("GET", "/user", token=ROOT_TOKEN).json()
    assert me["kind"] == "service" and me["admin"] is True
    user, _ = shub.new_user("promo")
    r = shub.api("PATCH", f"/users/{user}", token=ROOT_TOKEN, json={"admin": True})
    assert r.status_code == 200 and r.json()["admin"] is True


def test_service_without_token_and_wrong_tokens(shub: HubProcess) -> None:
    err(shub.api("GET", "/user", token=CULL_TOKEN + "x"), 403)
    err(shub.api("GET", "/user", token="docs"), 403)


def test_service_routes_in_the_proxy(shub: HubProcess) -> None:
    routes = shub.api("GET", "/proxy").json()
    prefix = shub.raw_base.replace(" ", "%20")
    board = routes[f"{prefix}services/board/"]
    assert board["target"] == "http://127.0.0.1:9" and board["data"]["service"] == "board"
    assert f"{prefix}services/docs/" in routes
    assert f"{prefix}services/culler/" not in routes  # no url, no route


def test_removed_service_token_stops_working(make_hub: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = write_config(tmp_path / "a.toml", **SETTINGS)
    hub = make_hub(data_dir=data, extra_args=["--config", str(first)])
    assert hub.api("GET", "/user", token=CULL_TOKEN).status_code == 200
    hub.stop()
    fewer: dict[str, Any] = {"services": [{"name": "culler"}], "roles": []}
    hub.extra_args = ["--config", str(write_config(tmp_path / "b.toml", **fewer))]
    hub.start()
    err(hub.api("GET", "/user", token=CULL_TOKEN), 403)
    err(hub.api("GET", "/user", token=ROOT_TOKEN), 403)
    assert sorted(hub.api("GET", "/services").json()) == ["culler"]
    assert CULL_TOKEN.encode() not in (data / "himalia.sqlite").read_bytes()
