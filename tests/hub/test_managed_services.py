"""Managed services: started with JupyterHub's service environment, routed, restarted when they
die, stopped with the hub; and the real ``jupyterhub-idle-culler`` running as one."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.hub import mockserver
from tests.hubproc import HubProcess

pytestmark = pytest.mark.slow

# A tiny service: answers every request with its PID and the JUPYTERHUB_* environment.
SERVICE = r'''
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid(), "path": self.path, "env": {
            k: v for k, v in os.environ.items() if k.startswith(("JUPYTERHUB_", "JPY_"))}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *a):
        pass
url = urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
HTTPServer((url.hostname, url.port), H).serve_forever()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(value: object) -> str:
    return json.dumps(value)  # JSON strings and arrays are valid TOML


def test_a_managed_service_runs_is_routed_and_restarted(
        make_hub: Callable[..., HubProcess], tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    url = f"http://127.0.0.1:{_free_port()}"
    config = tmp_path / "hub.toml"
    config.write_text(f"[[services]]\nname = \"echo\"\nurl = {_toml(url)}\n"
                      f"command = {_toml([sys.executable, str(script)])}\n"
                      "environment = { GREETING = \"hi\" }\n")
    hub = make_hub(extra_args=["--config", str(config)])
    endpoint = hub.url + "services/echo/x?y=1"

    def answer() -> dict[str, object] | None:
        try:
            r = requests.get(endpoint, timeout=5)
        except requests.RequestException:
            return None
        return dict(r.json()) if r.status_code == 200 else None

    first = hub.wait_for(answer, timeout=30)
    env = first["env"]
    assert isinstance(env, dict)
    assert env["JUPYTERHUB_SERVICE_NAME"] == "echo"
    assert env["JUPYTERHUB_SERVICE_URL"] == url
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == f"{hub.base_path}services/echo/"
    assert env["JUPYTERHUB_CLIENT_ID"] == "service-echo"
    assert env["JUPYTERHUB_API_URL"].endswith("/hub/api")
    assert first["path"] == f"{hub.base_path}services/echo/x?y=1"
    token = env["JUPYTERHUB_API_TOKEN"]
    me = requests.get(env["JUPYTERHUB_API_URL"] + "/user",
                      headers={"Authorization": f"token {token}"}, timeout=10).json()
    assert me["kind"] == "service" and me["name"] == "echo"

    os.kill(int(str(first["pid"])), signal.SIGKILL)  # dies: the hub starts it again
    second = hub.wait_for(lambda: (a := answer()) and a["pid"] != first["pid"] and a,
                          timeout=30)
    assert second["env"] == env  # same environment, same token
    hub.stop()  # the hub's helpers stop with it
    deadline = time.monotonic() + 15
    while answer() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(int(str(second["pid"])), 0)


def test_jupyterhub_idle_culler_runs_unchanged(make_hub: Callable[..., HubProcess],
                                              tmp_path: Path) -> None:
    cmd, args = mockserver.command("normal")
    culler = [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3", "--cull-every=1"]
    config = tmp_path / "hub.toml"
    config.write_text(
        f"singleuser_cmd = {_toml(cmd)}\nsingleuser_args = {_toml(args)}\n"
        "[[services]]\nname = \"idle-culler\"\n"
        f"command = {_toml(culler)}\n"
        "[[roles]]\nname = \"culler\"\n"
        "scopes = [\"list:users\", \"read:users:activity\", \"read:servers\", "
        "\"delete:servers\"]\nservices = [\"idle-culler\"]\n")
    hub = make_hub(extra_args=["--config", str(config)])
    name, _ = hub.new_user("idle")
    assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)
    hub.wait_for(lambda: hub.api("GET", f"/users/{name}").json()["servers"].get("", {})
                 .get("ready"), timeout=30)
    # Nobody uses it: the culler stops it through the REST API.
    hub.wait_for(lambda: hub.api("GET", f"/users/{name}").json()["servers"] == {}, timeout=60)
    log = (hub.data_dir / "services" / "idle-culler.log").read_text()
    assert "Culling server" in log or "culling" in log.lower(), log[-2000:]
