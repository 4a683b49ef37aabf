"""Faults with the whole real stack: hub restart, server death while the hub is away,
proxy death (SECURITY.md 14-16)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.hubproc import HubProcess

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(hub: HubProcess, name: str) -> dict[str, object]:
    r = hub.api("POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), r.text
    model = hub.wait_for(lambda: (m := hub.api("GET", f"/users/{name}").json())["server"] and m,
                         timeout=90)
    assert isinstance(model, dict)
    return model


def _routes(hub: HubProcess) -> dict[str, object]:
    record = json.loads((hub.data_dir / "proxy.json").read_text())
    token = record["token"]
    r = requests.get(record["api_url"].rstrip("/") + "/api/routes",
                     headers={"Authorization": f"token {token}"}, timeout=10)
    r.raise_for_status()
    return dict(r.json())


def _server_status(hub: HubProcess, name: str, token: str) -> int:
    url = hub.url + f"user/{quote(name)}/api/status"
    return requests.get(url, headers={"Authorization": f"token {token}"}, timeout=20).status_code


def test_hub_restart_keeps_servers_and_drops_the_dead(
    make_hub: Callable[..., HubProcess], tmp_path: Path
) -> None:
    data = tmp_path / "restart"
    args = ["--hub-port", str(_free_port())]
    hub = make_hub(data_dir=data, extra_args=args)
    alice, _ = hub.new_user("alive")
    bob, _ = hub.new_user("dies")
    alice_token = hub.make_token(alice)
    _start(hub, alice)
    bob_model = _start(hub, bob)
    assert _server_status(hub, alice, alice_token) == 200  # also warms the server's auth cache
    bob_pid = hub.api("GET", f"/users/{bob}").json()["servers"][""]["state"]["pid"]
    assert bob_model["server"]

    hub.stop()
    # the hub is away: alice's server keeps serving through the proxy
    assert _server_status(hub, alice, alice_token) == 200
    os.killpg(bob_pid, signal.SIGKILL)

    again = make_hub(data_dir=data, extra_args=args)
    assert again.public == hub.public  # same proxy, re-attached
    model = again.api("GET", f"/users/{alice}").json()
    assert model["servers"][""]["ready"] is True
    assert _server_status(again, alice, alice_token) == 200
    gone = again.wait_for(lambda: again.api("GET", f"/users/{bob}").json()["server"] is None)
    assert gone
    routes = _routes(again)
    assert any(k.endswith(f"/user/{alice}") for k in routes)
    assert not any(k.endswith(f"/user/{bob}") for k in routes)


def test_crash_is_noticed_and_user_can_start_again(make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub()
    name, _ = hub.new_user("crash")
    _start(hub, name)
    pid = hub.api("GET", f"/users/{name}").json()["servers"][""]["state"]["pid"]
    os.killpg(pid, signal.SIGKILL)
    # Fully stopped (route removed too), not just no longer ready.
    hub.wait_for(lambda: hub.api("GET", f"/users/{name}").json()["servers"] == {}, timeout=30)
    # the user's API call now gets 424, never a redirect loop
    r = requests.get(hub.url + f"user/{name}/api/contents", timeout=10, allow_redirects=False)
    assert r.status_code == 424 and r.json()["status"] == 424
    _start(hub, name)
    assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
    assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)


def test_killed_proxy_comes_back_with_its_routes(make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub()
    name, _ = hub.new_user("px")
    token = hub.make_token(name)
    _start(hub, name)
    pid = json.loads((hub.data_dir / "proxy.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        try:
            return _server_status(hub, name, token) == 200
        except requests.ConnectionError:
            return False

    assert hub.wait_for(back, timeout=20)


def test_start_right_after_health_is_200_succeeds(make_hub: Callable[..., HubProcess],
                                                  tmp_path: Path) -> None:
    """``/hub/health`` answers 200 only once the hub can start servers: a start sent the
    moment health first says 200 (while a restarted hub re-attaches a running server) never
    gets 503 "still starting"."""
    data = tmp_path / "health"
    port = _free_port()
    args = ["--hub-port", str(port)]
    hub = make_hub(data_dir=data, extra_args=args)
    early, _ = hub.new_user("early")
    running, _ = hub.new_user("running")
    _start(hub, running)  # something for the restarted hub to re-attach
    token = hub.admin_token
    hub.stop()

    base = f"http://127.0.0.1:{port}{hub.base_path}hub/"
    seen: dict[str, int] = {}

    def race() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = requests.get(base + "health", timeout=5)
            except requests.RequestException:  # not listening yet, or the answer is slow
                time.sleep(0.005)
                continue
            if health.status_code == 200:
                r = requests.post(base + f"api/users/{early}/server", timeout=60,
                                  headers={"Authorization": f"token {token}"})
                seen["start"] = r.status_code
                return
            seen["health"] = health.status_code

    racer = threading.Thread(target=race)
    racer.start()
    again = make_hub(data_dir=data, extra_args=args)
    racer.join(90)
    assert seen.get("start") in (201, 202), (seen, again.log_text()[-3000:])
    assert "health" not in seen  # never anything but 200 (or no answer yet)
    assert again.wait_for(lambda: again.api("GET", f"/users/{early}").json()["server"])
