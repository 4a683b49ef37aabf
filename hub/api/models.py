"""JSON models of users, servers, groups and services, trimmed to what the caller may read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from hub.api.base import APIHandler
from hub.db.models import Group, User, isoformat
from hub.services import scopes as sc
from hub.services.rbac import Service
from hub.services.user_list import UserData
from hub.services.users import server_model


def _iso(dt: datetime | None) -> str | None:
    """:func:`hub.db.models.isoformat` for the naive UTC times the database returns,
    without its copy (the hottest line of a user list)."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        return isoformat(dt)
    return dt.isoformat(timespec="microseconds") + "Z"


class _Reader:
    """What the caller may read, decided once per request for unfiltered scopes."""

    def __init__(self, handler: APIHandler) -> None:
        ident = handler.identity
        assert ident is not None
        self.ident = ident
        self.mgr = handler.hub.servers
        self.base_url = handler.hub.config.base_url
        self.all_users = "read:users" in ident.scopes
        self.all_servers = "read:servers" in ident.scopes
        self.all_state = "admin:server_state" in ident.scopes

    def user_res(self, user: UserData) -> sc.Resource:
        return sc.Resource(user=user.name, user_groups=frozenset(user.groups))

    def server_res(self, user: UserData, server: str) -> sc.Resource:
        return sc.Resource(user=user.name, server=f"{user.name}/{server}",
                           user_groups=frozenset(user.groups))

    def servers(self, user: UserData, include_stopped: bool) -> dict[str, Any]:
        mgr = self.mgr
        out: dict[str, Any] = {}
        for server in user.servers:
            pending = mgr.pending(user.name, server.name)
            if server.started is None and pending is None and not include_stopped:
                continue
            res = None
            if not self.all_servers:
                res = self.server_res(user, server.name)
                if not self.ident.can("read:servers", res):
                    continue
            state = self.all_state or self.ident.can(
                "admin:server_state", res or self.server_res(user, server.name))
            ready = mgr.is_ready(user.name, server.name)
            out[server.name] = server_model(user.name, server, self.base_url, pending, ready,
                                            include_state=state)
            spawner = mgr.spawner(user.name, server.name) if ready else None
            if spawner is not None:
                out[server.name].update(spawner.model_extra())  # e.g. a batch job's walltime
        return out

    def user(self, user: UserData, full: bool, include_stopped: bool) -> dict[str, Any]:
        if full or self.all_users or self.ident.can("read:users", self.user_res(user)):
            return self._full(user, include_stopped)
        return self._trimmed(user, include_stopped)

    def _full(self, user: UserData, include_stopped: bool) -> dict[str, Any]:
        servers = self.servers(user, include_stopped) if user.servers else {}
        default = servers.get("")
        return {
            "kind": "user",
            "name": user.name,
            "admin": user.admin,
            "roles": self._roles(user),
            "groups": sorted(user.groups),
            "server": default["url"] if default and default["ready"] else None,
            "pending": default["pending"] if default else None,
            "created": _iso(user.created),
            "last_activity": _iso(user.last_activity),
            "servers": servers,
        }

    @staticmethod
    def _roles(user: UserData) -> list[str]:
        roles = ["admin" if user.admin else "user"]
        if user.roles:
            roles.extend(r for r in dict.fromkeys(user.roles) if r not in roles)
        return roles

    def _trimmed(self, user: UserData, include_stopped: bool) -> dict[str, Any]:
        """Field by field, as JupyterHub does: e.g. the idle culler's ``list:users``,
        ``read:users:activity`` and ``read:servers`` see activity and servers."""
        res = self.user_res(user)
        model: dict[str, Any] = {"kind": "user", "name": user.name}
        if self.ident.can("read:users:name", res):
            model["admin"] = user.admin
        if self.ident.can("read:users:groups", res):
            model["groups"] = sorted(user.groups)
        if self.ident.can("read:roles:users", res):
            model["roles"] = self._roles(user)
        if self.ident.can("read:users:activity", res):
            model["last_activity"] = _iso(user.last_activity)
        if self.ident.can("read:servers", res) or any(
                self.ident.can("read:servers", self.server_res(user, s.name))
                for s in user.servers):
            servers = self.servers(user, include_stopped) if user.servers else {}
            default = servers.get("")
            model["servers"] = servers
            model["server"] = default["url"] if default and default["ready"] else None
            model["pending"] = default["pending"] if default else None
        return model


def user_models(handler: APIHandler, found: Sequence[UserData], full: bool = False,
                include_stopped: bool = False) -> list[dict[str, Any]]:
    """JupyterHub's user models; only ``kind`` and ``name`` without ``read:users``."""
    reader = _Reader(handler)
    return [reader.user(u, full, include_stopped) for u in found]


def user_model(handler: APIHandler, user: User | UserData, full: bool = False,
               include_stopped: bool = False) -> dict[str, Any]:
    """One user's model (from an ORM user with servers, groups and roles loaded, or data)."""
    data = user if isinstance(user, UserData) else UserData.from_orm(user)
    return user_models(handler, [data], full, include_stopped)[0]


def group_model(handler: APIHandler, group: Group) -> dict[str, Any]:
    """JupyterHub's group model: ``users`` and ``properties`` need ``read:groups``,
    ``roles`` needs ``read:roles:groups``; ``kind`` and ``name`` are always there."""
    ident = handler.identity
    assert ident is not None
    res = sc.Resource(group=group.name)
    model: dict[str, Any] = {"kind": "group", "name": group.name}
    if ident.can("read:groups", res):
        model["users"] = sorted(u.name for u in group.users)
        model["properties"] = dict(group.properties or {})
    if ident.can("read:roles:groups", res):
        model["roles"] = sorted(r.name for r in group.roles)
    return model


def service_model(handler: APIHandler, service: Service) -> dict[str, Any]:
    """JupyterHub's service model: the details need ``read:services``, ``roles`` needs
    ``read:roles:services``; ``kind``, ``name`` and ``admin`` are always there."""
    ident = handler.identity
    assert ident is not None
    model: dict[str, Any] = {"kind": "service", "name": service.name, "admin": service.admin}
    if ident.can("read:services"):
        base = handler.hub.config.base_url
        model.update({
            "url": service.url,
            "prefix": f"{base}services/{service.name}/" if service.url else "",
            "command": [],  # external services only: the hub runs no service processes
            "pid": 0,
            "info": dict(service.info),
            "display": service.display,
        })
    if ident.can("read:roles:services"):
        model["roles"] = list(service.roles)
    return model
