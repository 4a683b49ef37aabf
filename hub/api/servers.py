"""``/hub/api/users/<name>/server`` and ``/servers/<server>``: start, stop, read, progress (SSE).

Named servers are created by their first start, limited to ``named_server_limit_per_user`` per
user (stopped ones count until removed with ``DELETE {"remove": true}``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tornado.iostream import StreamClosedError

from hub.api.base import APIHandler
from hub.api.batch import routes as batch_routes
from hub.db.database import transaction
from hub.handlers.base import HubError
from hub.services import names, profiles, users
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

    def _row_exists(self, user: str, server_name: str) -> bool:
        with transaction(self.hub.db) as session:
            found = users.get(session, user)
            return found is not None and any(s.name == server_name for s in found.servers)

    def _check_named_limit(self, user: str, server_name: str) -> None:
        """400 when creating one more named server would pass the per-user limit."""
        with transaction(self.hub.db) as session:
            try:
                users.check_named_server_limit(users.require(session, user), server_name,
                                               int(self.hub.config.named_server_limit_per_user))
            except users.UserError as e:
                raise HubError(e.status, str(e)) from None

    def _groups(self, user: str) -> set[str]:
        with transaction(self.hub.db) as session:
            return {g.name for g in users.require(session, user).groups}

    def _checked_options(self, user: str, options: dict[str, Any]) -> dict[str, Any]:
        """With profiles configured: the options they allow (400 naming the field, before
        anything starts); without: as given."""
        found = profiles.parse(self.hub.config.profiles)
        if not found:
            return options
        try:
            return profiles.resolve(found, self._groups(user), options)
        except profiles.ProfileError as e:
            raise HubError(400, f"Invalid user options: {e}") from None

    @property
    def manager(self) -> srv.ServerManager:
        return self.hub.servers


class ServerHandler(_ServerBase):
    """``POST`` starts a server (201 ready, 202 pending); ``DELETE`` stops it (204/202)."""

    async def post(self, name: str, server_name: str = "") -> None:
        options = self.json_body(default={})
        if not isinstance(options, dict):
            raise HubError(400, "user options must be a JSON object")
        user, server = self._target(name, server_name, "servers")
        self._check_named_limit(user, server)
        options = self._checked_options(user, options)
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
        if server and not self._row_exists(user, server) and \
                self.manager.pending(user, server) is None:
            raise HubError(404, f"{user} has no server named {server}")
        await self.manager.stop(user, server)
        if data.get("remove"):
            await self.manager.remove(user, server)
        self.set_status(204)
        self.finish()


class NamedServerHandler(ServerHandler):
    """``/users/<name>/servers/<server>``: ``GET`` the server model as well (404 if none)."""

    def get(self, name: str, server_name: str) -> None:
        user, server = self._target(name, server_name, "read:servers")
        mgr = self.manager
        with transaction(self.hub.db) as session:
            owner = users.require(session, user)
            row = next((s for s in owner.servers if s.name == server), None)
            if row is None:
                raise HubError(404, f"{user} has no server named {server}")
            res = sc.Resource(user=user, server=f"{user}/{server}",
                              user_groups=frozenset(g.name for g in owner.groups))
            assert self.identity is not None
            model = users.server_model(
                user, row, self.hub.config.base_url, mgr.pending(user, server),
                mgr.is_ready(user, server),
                include_state=self.identity.can("admin:server_state", res))
        spawner = mgr.spawner(user, server) if mgr.is_ready(user, server) else None
        if spawner is not None:
            model.update(spawner.model_extra())  # e.g. a batch job's walltime
        self.write_json(model)


class SpawnOptionsHandler(_ServerBase):
    """``GET``: the JSON Schema of the options this user may start the server with (from the
    ``profiles`` setting; ``null`` without profiles) and the server's last options."""

    def get(self, name: str, server_name: str = "") -> None:
        user, server = self._target(name, server_name, "read:servers")
        found = profiles.parse(self.hub.config.profiles)
        with transaction(self.hub.db) as session:
            owner = users.require(session, user)
            groups = {g.name for g in owner.groups}
            last = users.last_options(owner, server)
        self.write_json({"schema": profiles.schema_for(found, groups) if found else None,
                         "last": last})


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
    (r"api/users/([^/]+)/servers/([^/]+)", NamedServerHandler),
    (r"api/users/([^/]+)/server/progress", ProgressHandler),
    (r"api/users/([^/]+)/server/options", SpawnOptionsHandler),
    (r"api/users/([^/]+)/servers/([^/]+)/options", SpawnOptionsHandler),
    (r"api/users/([^/]+)/servers/([^/]+)/progress", ProgressHandler),
    *batch_routes,  # a batch job's server reports its port
]
