"""Named servers through the REST API: start, read, limit, remove, progress events, scopes.

Servers are the fast fake single-user server of ``tests/hub/mockserver.py``; one slow test
spawns the real ``himalia-singleuser`` and follows its progress stream to the end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.hub.apitools import err, write_config
from tests.hubproc import HubProcess, running

LIMIT = 2


@pytest.fixture(scope="module")
def nhub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    data = tmp_path_factory.mktemp("named")
    config = write_config(data.parent / f"{data.name}.toml",
                          named_server_limit_per_user=LIMIT)
    yield from running(data, extra_args=["--config", str(config)])


def events(hub: HubProcess, user: str, server: str, token: str | None = None,
           timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every event of a progress stream, until the server closes it."""
    path = (f"/users/{user}/servers/{server}/progress" if server
            else f"/users/{user}/server/progress")
    out: list[dict[str, Any]] = []
    with requests.get(hub.hub_api + path, stream=True, timeout=timeout,
                      headers={"Authorization": f"token {token or hub.admin_token}"}) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for raw in r.iter_lines():
            line = raw.decode("utf-8")
            if line.startswith("data: "):
                out.append(json.loads(line[len("data: "):]))
    return out


def test_start_get_remove(nhub: HubProcess) -> None:
    user, _ = nhub.new_user("n")
    r = nhub.api("POST", f"/users/{user}/servers/lab", json={"size": "small"})
    assert r.status_code in (201, 202), r.text
    nhub.wait_for(lambda: nhub.api("GET", f"/users/{user}/servers/lab").json()["ready"])
    active = nhub.api("GET", "/users", params={"state": "active", "name_filter": user}).json()
    assert [u["name"] for u in active] == [user]
    assert nhub.api("GET", "/users", params={"state": "inactive", "name_filter": user}
                    ).json() == []
    model = nhub.api("GET", f"/users/{user}/servers/lab").json()
    assert model["name"] == "lab" and model["pending"] is None and model["stopped"] is False
    assert model["url"].endswith(f"/user/{user}/lab/")
    assert model["progress_url"].endswith(f"/users/{user}/servers/lab/progress")
    assert model["user_options"] == {"size": "small"} and "state" in model  # admin reads state
    assert nhub.api("GET", f"/users/{user}").json()["servers"]["lab"]["ready"] is True
    err(nhub.api("POST", f"/users/{user}/servers/lab"), 400)  # already running
    assert nhub.api("DELETE", f"/users/{user}/servers/lab").status_code == 204
    stopped = nhub.api("GET", f"/users/{user}/servers/lab").json()
    assert stopped["stopped"] is True and stopped["ready"] is False
    assert "lab" not in nhub.api("GET", f"/users/{user}").json()["servers"]
    for flag in ("", "1", "true"):
        got = nhub.api("GET", f"/users/{user}", params={"include_stopped_servers": flag}).json()
        assert got["servers"]["lab"]["stopped"] is True
    listed = nhub.api("GET", "/users", params={"include_stopped_servers": "",
                                                "name_filter": user}).json()
    assert listed[0]["servers"]["lab"]["stopped"] is True
    assert nhub.api("GET", f"/users/{user}", params={"include_stopped_servers": "0"}
                    ).json()["servers"] == {}
    assert nhub.api("DELETE", f"/users/{user}/servers/lab",
                    json={"remove": True}).status_code == 204
    err(nhub.api("GET", f"/users/{user}/servers/lab"), 404)
    err(nhub.api("DELETE", f"/users/{user}/servers/lab"), 404)
    err(nhub.api("DELETE", f"/users/{user}/server", json={"remove": True}), 400)


def test_errors(nhub: HubProcess) -> None:
    user, _ = nhub.new_user("e")
    err(nhub.api("GET", f"/users/{user}/servers/nothing"), 404)
    err(nhub.api("GET", "/users/no-such-user-n/servers/lab"), 404)
    for bad in ("Lab", "9lives", "a" * 31, "a_b"):
        err(nhub.api("GET", f"/users/{user}/servers/{bad}"), 400)
        err(nhub.api("POST", f"/users/{user}/servers/{bad}"), 400)
    err(nhub.api("POST", f"/users/{user}/servers/lab", json=[1]), 400)
    err(nhub.api("DELETE", f"/users/{user}/servers/lab", json={"remove": "yes"}), 400)


def test_per_user_limit(nhub: HubProcess) -> None:
    user, _ = nhub.new_user("lim")
    for name in ("one", "two"):
        assert nhub.api("POST", f"/users/{user}/servers/{name}").status_code in (201, 202)
    msg = err(nhub.api("POST", f"/users/{user}/servers/three"), 400)
    assert f"maximum of {LIMIT} named servers" in msg
    assert nhub.api("DELETE", f"/users/{user}/servers/two").status_code in (202, 204)
    err(nhub.api("POST", f"/users/{user}/servers/three"), 400)  # stopped ones still count
    assert nhub.api("POST", f"/users/{user}/servers/two").status_code in (201, 202)  # restart
    assert nhub.api("DELETE", f"/users/{user}/servers/two",
                    json={"remove": True}).status_code == 204
    assert nhub.api("POST", f"/users/{user}/servers/three").status_code in (201, 202)
    assert nhub.api("POST", f"/users/{user}/server").status_code in (201, 202)  # not counted
    for name in ("one", "three"):
        nhub.api("DELETE", f"/users/{user}/servers/{name}", json={"remove": True})
    nhub.api("DELETE", f"/users/{user}/server")


def test_progress_events_for_a_named_server(nhub: HubProcess) -> None:
    user, _ = nhub.new_user("p")
    assert events(nhub, user, "prog")[-1] == {
        "progress": 100, "failed": True, "message": "The server is not running"}
    assert nhub.api("POST", f"/users/{user}/servers/prog").status_code in (201, 202)
    got = events(nhub, user, "prog")
    final = got[-1]
    assert final["progress"] == 100 and final["ready"] is True
    assert final["url"].endswith(f"/user/{user}/prog/")
    nhub.api("DELETE", f"/users/{user}/servers/prog", json={"remove": True})


def test_scopes_on_named_servers(nhub: HubProcess) -> None:
    owner, _ = nhub.new_user("own")
    other, _ = nhub.new_user("oth")
    mine = nhub.make_token(owner)
    assert nhub.api("POST", f"/users/{owner}/servers/a", token=mine).status_code in (201, 202)
    assert nhub.api("GET", f"/users/{owner}/servers/a", token=mine).json()["name"] == "a"
    assert "state" not in nhub.api("GET", f"/users/{owner}/servers/a", token=mine).json()
    theirs = nhub.make_token(other)
    err(nhub.api("GET", f"/users/{owner}/servers/a", token=theirs), 404)
    err(nhub.api("POST", f"/users/{owner}/servers/b", token=theirs), 404)
    err(nhub.api("DELETE", f"/users/{owner}/servers/a", token=theirs), 404)
    one = nhub.make_token("admin", f"read:servers!server={owner}/a")
    assert nhub.api("GET", f"/users/{owner}/servers/a", token=one).status_code == 200
    err(nhub.api("GET", f"/users/{owner}/servers/b", token=one), 404)
    err(nhub.api("DELETE", f"/users/{owner}/servers/a", token=one), 403)
    assert nhub.api("DELETE", f"/users/{owner}/servers/a", token=mine,
                    json={"remove": True}).status_code == 204


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("himalia-singleuser") is None and not (
    Path(__file__).resolve().parents[2] / ".venv/bin/himalia-singleuser").exists(),
    reason="himalia-singleuser is not installed")
def test_real_singleuser_named_server_progress(make_hub: Any) -> None:
    """End to end with the real single-user server: progress events up to ready."""
    hub = make_hub()
    user, _ = hub.new_user("real")
    r = hub.api("POST", f"/users/{user}/servers/work")
    assert r.status_code in (201, 202), r.text
    got = events(hub, user, "work", timeout=180)
    progress = [e["progress"] for e in got]
    assert progress == sorted(progress) and got[-1]["ready"] is True, got
    api = requests.get(hub.url + f"user/{user}/work/api", timeout=30)
    assert api.status_code == 200 and "version" in api.json()
    assert hub.api("DELETE", f"/users/{user}/servers/work",
                   json={"remove": True}).status_code == 204
    err(hub.api("GET", f"/users/{user}/servers/work"), 404)
