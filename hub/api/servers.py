"""``/hub/api/users/<name>/server`` and ``/servers/<server>``: start, stop, progress (SSE)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tornado.iostream import StreamClosedError

from hub.api.base import APIHandler
from hub.db.database import transaction
from hub.handlers.base import HubError
from hub.services import names, users
from hub.services import scopes as sc
from hub.services import servers as srv

#: How long a start request waits for the server before answering 202 (pending).
SLOW_SPAWN = 10.0
KEEPALIVE = 8.0


class _ServerBase(APIHandler):
    def _target(self, name: str, server_name: str, needed: str) -> tuple[str, str]:
        """Canonical (user, server) names, after the scope check (404 when not visible)."""
        if server_name:
            try:
                names.validate_server_name(server_name)
            except names.NameError_ as e:
                raise HubError(400, str(e)) from None
        with transaction(self.hub.db) as session:
            user = users.get(session, name)
            if user is None:
                raise HubError(404, f"No such user: {name}")
            res = sc.Resource(user=user.name, server=f"{user.name}/{server_name}",
                              user_groups=frozenset(g.name for g in user.groups))
            assert self.identity is not None
            if not self.identity.can(needed, res):
                if not self.identity.can("read:servers", res) and \
                        not self.identity.can("read:users:name", res):
                    raise HubError(404, f"No such user: {name}")
                raise HubError(403, f"Action is not authorized with current scopes; "
                                    f"requires {needed}")
            return user.name, server_name

    @property
    def manager(self) -> srv.ServerManager:
        if self.hub.servers is None:
            raise HubError(503, "The hub is still starting")
        return self.hub.servers


class ServerHandler(_ServerBase):
    """``POST`` starts a server (201 ready, 202 pending); ``DELETE`` stops it (204/202)."""

    async def post(self, name: str, server_name: str = "") -> None:
        options = self.json_body(default={})
        if not isinstance(options, dict):
            raise HubError(400, "user options must be a JSON object")
        user, server = self._target(name, server_name, "servers")
        try:
            await self.manager.start(user, server, options)
        except srv.AlreadyRunning as e:
            raise HubError(400, str(e)) from None
        except srv.TooManySpawns as e:
            raise HubError(429, "Too many users are starting right now; try again shortly",
                           headers={"Retry-After": str(int(e.retry_after))}) from None
        ready = await self.manager.wait_ready(user, server, timeout=SLOW_SPAWN)
        if ready:
            self.set_status(201)
        elif self.manager.pending(user, server) == "spawn":
            self.set_status(202)
        else:
            raise HubError(500, self.manager.failure_message(user, server)
                           or "The server failed to start")
        self.finish()

    async def delete(self, name: str, server_name: str = "") -> None:
        data = self.json_body({"remove": bool})
        user, server = self._target(name, server_name, "delete:servers")
        if data.get("remove") and not server:
            raise HubError(400, "The default server cannot be removed")
        await self.manager.stop(user, server)
        if data.get("remove"):
            await self.manager.remove(user, server)
        self.set_status(204)
        self.finish()


class ProgressHandler(_ServerBase):
    """Server-Sent Events: ``data: {"progress": 0-100, "message": ...}`` until ready/failed."""

    async def get(self, name: str, server_name: str = "") -> None:
        user, server = self._target(name, server_name, "read:servers")
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        events = self.manager.progress_events(user, server).__aiter__()
        try:
            await self._stream(events)
        except StreamClosedError:
            return
        self.finish()

    async def _stream(self, events: Any) -> None:
        pending: asyncio.Task[Any] | None = None
        try:
            while True:
                pending = pending or asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE)
                if not done:
                    self.write("\n")  # keep-alive through idle proxies
                    await self.flush()
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                self.write(f"data: {json.dumps(event)}\n\n")
                await self.flush()
        finally:
            if pending is not None:
                pending.cancel()


routes = [
    (r"api/users/([^/]+)/server", ServerHandler),
    (r"api/users/([^/]+)/servers/([^/]+)", ServerHandler),
    (r"api/users/([^/]+)/server/progress", ProgressHandler),
    (r"api/users/([^/]+)/servers/([^/]+)/progress", ProgressHandler),
]
