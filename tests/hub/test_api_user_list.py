"""``GET /users?state=ready`` with real servers: every filter applies before the page is cut.

Servers are the fake single-user server in ``ignore-term`` mode: a stop then takes the spawner's
whole SIGTERM grace period, during which the server is still started (so "active") but no longer
ready — the case in which a filter applied after ``LIMIT`` gave short pages and a wrong total.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hub.apitools import write_config
from tests.hubproc import HubProcess, running

PAGED = {"Accept": "application/jupyterhub-pagination+json"}


@pytest.fixture(scope="module")
def slow_stop_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    data = tmp_path_factory.mktemp("userlist")
    config = write_config(data.parent / f"{data.name}.toml", mock_mode="ignore-term")
    yield from running(data, extra_args=["--config", str(config)])


def _page(hub: HubProcess, prefix: str, **params: Any) -> dict[str, Any]:
    r = hub.api("GET", "/users", headers=PAGED,
                params={"state": "ready", "name_filter": prefix, **params})
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    return page


def test_ready_pages_are_full_and_counted(slow_stop_hub: HubProcess) -> None:
    hub = slow_stop_hub
    prefix = f"rdy{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}{i}" for i in range(6)]  # ids in this order: the default sort
    assert hub.api("POST", "/users", json={"usernames": names}).status_code == 201
    for name in names[:5]:  # the last one never starts
        assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)
    for name in names[:5]:
        hub.wait_for(lambda n=name: hub.api("GET", f"/users/{n}").json()["servers"]
                     .get("", {}).get("ready"))
    # The first two stop slowly (their server ignores SIGTERM): started, but not ready.
    stops = [threading.Thread(target=hub.api, args=("DELETE", f"/users/{n}/server"))
             for n in names[:2]]
    for thread in stops:
        thread.start()
    try:
        for name in names[:2]:
            hub.wait_for(lambda n=name: hub.api("GET", f"/users/{n}").json()["pending"]
                         == "stop")
        active = hub.api("GET", "/users", params={"state": "active", "name_filter": prefix})
        assert [u["name"] for u in active.json()] == names[:5]

        first = _page(hub, prefix, limit=2)
        assert [u["name"] for u in first["items"]] == names[2:4]
        assert first["_pagination"]["total"] == 3
        assert first["_pagination"]["next"]["offset"] == 2
        second = _page(hub, prefix, limit=2, offset=2)
        assert [u["name"] for u in second["items"]] == names[4:5]
        assert second["_pagination"]["total"] == 3 and second["_pagination"]["next"] is None
        bare = hub.api("GET", "/users", params={"state": "ready", "name_filter": prefix})
        assert [u["name"] for u in bare.json()] == names[2:5]
    finally:
        for thread in stops:
            thread.join(timeout=60)
    inactive = hub.api("GET", "/users", params={"state": "inactive", "name_filter": prefix})
    assert sorted(u["name"] for u in inactive.json()) == sorted([*names[:2], names[5]])


def test_unknown_state_and_sort_are_refused(slow_stop_hub: HubProcess) -> None:
    for params in ({"state": "sleepy"}, {"sort": "age"}):
        r = slow_stop_hub.api("GET", "/users", params=params)
        assert r.status_code == 400 and r.json()["status"] == 400, r.text
        assert isinstance(r.json()["message"], str)
