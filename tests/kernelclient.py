"""Run code in a real Jupyter kernel of a user's server, through the proxy: REST + websocket.

This is what a notebook does: ``POST <prefix>api/kernels`` starts a kernel, and an
``execute_request`` on ``<prefix>api/kernels/<id>/channels`` runs code; the replies on the
iopub channel carry what it printed. Authenticated with a hub API token (``Authorization``).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from websockets.sync.client import connect


@dataclass
class Execution:
    """What one ``execute_request`` produced."""

    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # "<ename>: <evalue>" when the code raised
    status: str = ""  # the kernel's last status: idle, or dead/restarting when it died
    messages: list[dict[str, Any]] = field(default_factory=list)


class KernelClient:
    """One kernel of the server at ``server_url`` (``http://host:port/user/alice/``)."""

    def __init__(self, server_url: str, token: str) -> None:
        self.server_url = server_url.rstrip("/") + "/"
        self.headers = {"Authorization": f"token {token}"}
        r = requests.post(self.server_url + "api/kernels", json={"name": "python3"},
                          headers=self.headers, timeout=60)
        r.raise_for_status()
        self.kernel_id: str = r.json()["id"]
        self.session = uuid.uuid4().hex

    def execute(self, code: str, timeout: float = 60.0) -> Execution:
        ws_url = self.server_url.replace("http", "ws", 1) + \
            f"api/kernels/{self.kernel_id}/channels?session_id={self.session}"
        msg_id = uuid.uuid4().hex
        request = {
            "header": {"msg_id": msg_id, "username": "test", "session": self.session,
                       "msg_type": "execute_request", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }
        out = Execution()
        deadline = time.monotonic() + timeout
        with connect(ws_url, additional_headers=self.headers, open_timeout=30,
                     max_size=None) as ws:
            ws.send(json.dumps(request))
            while time.monotonic() < deadline:
                try:
                    raw = ws.recv(timeout=max(deadline - time.monotonic(), 0.1))
                except TimeoutError:
                    break
                if not isinstance(raw, str):
                    continue
                msg = json.loads(raw)
                out.messages.append(msg)
                if self._collect(out, msg, msg_id):
                    return out
        raise TimeoutError(f"no reply to the execute_request in {timeout}s: {out}")

    @staticmethod
    def _collect(out: Execution, msg: dict[str, Any], msg_id: str) -> bool:
        """Fold one message into ``out``; True once the execution is over."""
        kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
        content = msg.get("content", {})
        if kind == "status":
            out.status = content.get("execution_state", "")
            if out.status in ("dead", "restarting"):
                return True
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            return False
        if kind == "stream":
            if content.get("name") == "stderr":
                out.stderr += content.get("text", "")
            else:
                out.stdout += content.get("text", "")
        elif kind == "error":
            out.error = f"{content.get('ename')}: {content.get('evalue')}"
        return kind == "status" and out.status == "idle"

    def run_json(self, code: str, timeout: float = 60.0) -> Any:
        """Run ``code``, which must print one JSON document last; return it parsed."""
        result = self.execute(code, timeout)
        if result.error:
            raise AssertionError(f"kernel code raised {result.error}\n{result.stderr}")
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"kernel printed nothing: {result}")
        return json.loads(lines[-1])
