"""``/hub/api/proxy``: the routing table, a re-sync now, pointing the hub at another proxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from hub.api.proxy import jupyterhub_routes, new_api_url
from hub.handlers.base import HubError
from tests.hub import mockserver
from tests.hub.apitools import err
from tests.hubproc import HubProcess

PAGINATED = {"Accept": "application/jupyterhub-pagination+json"}


def _proxy_api(hub: HubProcess) -> tuple[str, dict[str, str]]:
    record = json.loads((hub.data_dir / "proxy.json").read_text())
    return record["api_url"], {"Authorization": f"token {record['token']}"}


def _add_route(hub: HubProcess, path: str, body: dict[str, Any]) -> None:
    api, headers = _proxy_api(hub)
    r = requests.post(api + "/api/routes" + path, json=body, headers=headers, timeout=10)
    assert r.status_code == 201, r.text


def _routes(hub: HubProcess) -> dict[str, Any]:
    api, headers = _proxy_api(hub)
    table: dict[str, Any] = requests.get(api + "/api/routes", headers=headers, timeout=10).json()
    return table


def test_get_routing_table(hub: HubProcess) -> None:
    _add_route(hub, "/not-ours", {"target": "http://127.0.0.1:9"})
    table = hub.api("GET", "/proxy").json()
    root = table["/"]
    assert root["routespec"] == "/" and root["target"] == hub.hub_url
    assert root["data"]["hub"] is True and "jupyterhub" not in root["data"]
    assert "/not-ours/" not in table  # routes the hub did not make are someone else's
    page = hub.api("GET", "/proxy", params={"limit": 1}, headers=PAGINATED).json()
    assert list(page["items"]) == ["/"] and page["_pagination"]["total"] == len(table)
    past = hub.api("GET", "/proxy", params={"offset": 500}, headers=PAGINATED).json()
    assert past["items"] == {} and past["_pagination"]["next"] is None


def test_proxy_scope_is_required(hub: HubProcess) -> None:
    user, _ = hub.new_user("np")
    token = hub.make_token(user)
    for method in ("GET", "POST", "PATCH"):
        err(hub.api(method, "/proxy", token=token, json={} if method != "GET" else None), 403)
    narrow = hub.make_token("admin", "proxy")
    assert hub.api("GET", "/proxy", token=narrow).status_code == 200


def test_post_resyncs_now(make_hub: Any) -> None:
    hub = make_hub(extra_args=["--proxy-check-interval", "3600"])  # no periodic repair here
    api, headers = _proxy_api(hub)
    _add_route(hub, "/stale", {"target": "http://127.0.0.1:9", "jupyterhub": True})
    requests.delete(api + "/api/routes/", headers=headers, timeout=10)  # the hub's own route
    assert "/" not in _routes(hub)
    # straight to the hub: without its route the proxy no longer reaches it
    r = requests.post(hub.hub_url + hub.base_path + "hub/api/proxy", timeout=30,
                      headers={"Authorization": f"token {hub.admin_token}"})
    assert r.status_code == 200, r.text
    assert r.json() == {"added": ["/"], "removed": ["/stale/"], "restarted": False}
    assert "/" in _routes(hub) and "/stale" not in _routes(hub)
    err(hub.api("POST", "/proxy", json={"force": True}), 400)


def test_patch_points_at_a_new_proxy(make_hub: Any, tmp_path: Path) -> None:
    hub = make_hub()
    other = mockserver.RealProxy(tmp_path / "other", "other-proxy-token-123").start()
    try:
        err(hub.api("PATCH", "/proxy", json={"api_url": other.api_url,
                                             "auth_token": "wrong-token-zzz"}), 400)
        assert hub.api("GET", "/proxy").json()["/"]["target"] == hub.hub_url  # unchanged
        err(hub.api("PATCH", "/proxy", json={}), 400)
        err(hub.api("PATCH", "/proxy", json={"protocol": "gopher"}), 400)
        err(hub.api("PATCH", "/proxy", json={"port": 70000}), 400)
        err(hub.api("PATCH", "/proxy", json={"ip": 1}), 400)
        port = other.api_url.rsplit(":", 1)[1]
        r = hub.api("PATCH", "/proxy", json={"ip": "127.0.0.1", "port": port,
                                              "protocol": "http",
                                              "auth_token": "other-proxy-token-123"})
        assert r.status_code == 200, r.text
        assert r.json()["api_url"] == other.api_url and "/" in r.json()["added"]
        table = hub.api("GET", "/proxy").json()  # now read from the other proxy
        assert table["/"]["target"] == hub.hub_url
        got = requests.get(other.api_url + "/api/routes", timeout=10,
                           headers={"Authorization": "token other-proxy-token-123"}).json()
        assert got["/"]["jupyterhub"] is True
        assert "other-proxy-token-123" not in hub.log_text()
    finally:
        other.stop()


def test_route_table_format_unit() -> None:
    table: dict[str, dict[str, Any]] = {
        "/": {"target": "http://h", "hub": True, "jupyterhub": True},
        "/user/a%20b": {"target": "http://s", "user": "a b", "jupyterhub": True,
                        "last_activity": "2024-01-01T00:00:00Z"},
        "/x": {"target": "http://x"},
    }
    assert jupyterhub_routes(table) == {
        "/": {"routespec": "/", "target": "http://h", "data": {"hub": True}},
        "/user/a%20b/": {"routespec": "/user/a%20b/", "target": "http://s",
                         "data": {"user": "a b", "last_activity": "2024-01-01T00:00:00Z"}},
    }


def test_new_api_url_unit() -> None:
    current = "http://127.0.0.1:8001"
    assert new_api_url(current, {"auth_token": "t"}) == current
    assert new_api_url(current, {"port": "9001"}) == "http://127.0.0.1:9001"
    assert new_api_url(current, {"ip": "::1", "protocol": "https"}) == "https://[::1]:8001"
    assert new_api_url(current, {"api_url": "http://p:1/"}) == "http://p:1"
    for bad in ({"api_url": "file:///etc"}, {"ip": "a/b"}, {"port": "x"}, {"port": 0}):
        try:
            new_api_url(current, bad)
        except HubError as e:
            assert e.status_code == 400
        else:
            raise AssertionError(bad)
