"""``POST /hub/api/shutdown`` — stop the hub cleanly (scope ``shutdown``).

Body ``{"proxy": bool, "servers": bool}``, both optional. As in JupyterHub, ``proxy`` defaults
to true (a proxy the hub started is stopped; one it attached to is left alone) and ``servers``
to false here: Himalia's user servers outlive the hub by design, and a restarted hub re-attaches
to them. The answer is 202 ``{"message": "Shutting down Hub"}``; then servers are stopped (if
asked), then the proxy, and the hub process ends through its normal SIGTERM path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import ClassVar

from hub.api.base import APIHandler
from hub.context import HubContext

log = logging.getLogger(__name__)


async def shut_down(hub: HubContext, proxy: bool, servers: bool) -> None:
    """Stop what was asked for, then signal our own process to exit cleanly."""
    try:
        if servers:
            log.info("shutdown: stopping every user server")
            await hub.servers.stop_all()
        if proxy:
            log.info("shutdown: stopping the proxy (if the hub started it)")
            await hub.proxy_launcher.stop()
    except Exception:
        log.exception("shutdown: cleaning up failed; exiting anyway")
    # The same path as `kill -TERM`: serve() stops its loops and closes connections.
    os.kill(os.getpid(), signal.SIGTERM)


class ShutdownHandler(APIHandler):
    """``POST`` → 202, then the hub exits (see the module docstring)."""

    _tasks: ClassVar[set[asyncio.Task[None]]] = set()  # keep a reference until the task ends

    def post(self) -> None:
        data = self.json_body({"proxy": bool, "servers": bool})
        self.require("shutdown")
        proxy, servers = data.get("proxy", True), data.get("servers", False)
        assert self.identity is not None
        log.warning("shutdown requested by %s (proxy: %s, servers: %s)", self.identity.name,
                    proxy, servers)
        self.write_json({"message": "Shutting down Hub"}, 202)
        task = asyncio.ensure_future(shut_down(self.hub, proxy, servers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


routes = [
    (r"api/shutdown", ShutdownHandler),
]
