"""A busy kernel counts as activity: reports keep advancing while a silent computation runs,
so the hub's idle culler keeps the server."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from singleuser.activity import with_busy_kernels
from tests.kernelclient import KernelClient
from tests.singleuser.conftest import SingleUser


def test_with_busy_kernels() -> None:
    then = datetime(2026, 1, 1, tzinfo=UTC)
    kernels: list[dict[str, Any]] = [{"execution_state": "idle"}]
    latest = with_busy_kernels(lambda: then, lambda: kernels)
    assert latest() == then
    kernels.append({"execution_state": "busy"})
    assert datetime.now(UTC) - latest() < timedelta(seconds=1)


def _stamp(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(body["last_activity"]).replace("Z", "+00:00"))


def test_silent_busy_kernel_keeps_reporting(alice: SingleUser) -> None:
    token = alice.hub.add_token("alice", ["access:servers"])
    kernel = KernelClient(alice.direct_url, token)
    kernel.execute("1")  # started and idle
    began = datetime.now(UTC)
    done = threading.Event()

    def run() -> None:
        kernel.execute("import time; time.sleep(4)", timeout=60)
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    time.sleep(3)  # the kernel prints nothing meanwhile; reports every 0.5 s
    assert not done.is_set()
    latest = max(_stamp(body) for _, body in alice.hub.activity)
    assert latest - began > timedelta(seconds=2), (began, latest)
    worker.join(30)
    assert done.is_set()
