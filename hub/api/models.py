"""JSON models of users, servers, groups and services, trimmed to what the caller may read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, func, literal, select, union_all
from sqlalchemy.orm import Session

from hub.api.base import APIHandler
from hub.db.models import (
    Group,
    Role,
    Server,
    User,
    group_roles,
    isoformat,
    user_groups,
    user_roles,
)
from hub.services import scopes as sc
from hub.services.rbac import Service
from hub.services.users import server_model


@dataclass(slots=True)
class ServerData:
    """The columns of a server row that its model shows."""

    name: str
    started: datetime | None
    last_activity: datetime | None
    user_options: dict[str, Any] | None
    state: dict[str, Any] | None


@dataclass(slots=True)
class UserData:
    """What a user model shows, loaded with plain queries (no ORM objects): see
    :func:`load_users`. ``roles`` are the user's own roles, then their groups' roles."""

    id: int
    name: str
    admin: bool
    created: datetime
    last_activity: datetime | None
    servers: list[ServerData] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)

    @classmethod
    def from_orm(cls, user: User) -> UserData:
        """The same data from a loaded :class:`User` (servers, groups and roles loaded)."""
        return cls(user.id, user.name, user.admin, user.created, user.last_activity,
                   [ServerData(s.name, s.started, s.last_activity, s.user_options, s.state)
                    for s in sorted(user.servers, key=lambda s: s.id)],
                   [g.name for g in user.groups],
                   [*(r.name for r in user.roles),
                    *(r.name for g in user.groups for r in g.roles)])


_U, _S, _G, _R = User.__table__.c, Server.__table__.c, Group.__table__.c, Role.__table__.c
#: Select these (in this order) to hand rows to :func:`load_users`. Core columns: a statement
#: built from them skips the ORM's compile step (a third of a simple query's cost).
USER_COLUMNS = (_U.id, _U.name, _U.admin, _U.created, _U.last_activity)
#: One user by (normalized) name, built once: ``{"name": ...}``.
USER_BY_NAME = select(*USER_COLUMNS).where(_U.name == bindparam("name"))


@cache
def _related(dialect: str) -> tuple[Any, Any]:
    """The two statements that complete a page of users: their servers, and their groups,
    own roles and groups' roles (``kind`` g, r, s). Built once per dialect. The user ids are
    one JSON parameter on SQLite (``json_each``: no per-id placeholder to render) and an
    expanding ``IN`` elsewhere."""
    if dialect == "sqlite":
        ids: Any = select(func.json_each(bindparam("ids")).table_valued("value").c.value)
    else:
        ids = bindparam("ids", expanding=True)
    ug, ur, gr = user_groups.c, user_roles.c, group_roles.c
    servers = (select(_S.user_id, _S.name, _S.started, _S.last_activity, _S.user_options,
                      _S.state).where(_S.user_id.in_(ids)).order_by(_S.id))
    related = union_all(
        select(ug.user_id.label("uid"), literal("g").label("kind"), _G.name.label("name"),
               _G.id.label("oid")).join(Group.__table__, _G.id == ug.group_id)
        .where(ug.user_id.in_(ids)),
        select(ur.user_id, literal("r"), _R.name, _R.id)
        .join(Role.__table__, _R.id == ur.role_id).where(ur.user_id.in_(ids)),
        select(ug.user_id, literal("s"), _R.name, _R.id)
        .join(group_roles, gr.group_id == ug.group_id)
        .join(Role.__table__, _R.id == gr.role_id).where(ug.user_id.in_(ids)),
    ).order_by("kind", "oid")
    return servers, related


def load_users(session: Session, rows: Sequence[Any]) -> list[UserData]:
    """Users from rows of :data:`USER_COLUMNS`, completed with their servers, groups and
    roles in two more queries, whatever the number of users."""
    found = [UserData(*row) for row in rows]
    by_id = {u.id: u for u in found}
    if not by_id:
        return found
    conn = session.connection()
    servers, related = _related(conn.dialect.name)
    ids: Any = list(by_id)
    params = {"ids": json.dumps(ids) if conn.dialect.name == "sqlite" else ids}
    for row in conn.execute(servers, params):
        by_id[row[0]].servers.append(ServerData(*row[1:]))
    for user_id, kind, name, _ in conn.execute(related, params).tuples():
        owner = by_id[int(user_id)]
        (owner.groups if kind == "g" else owner.roles).append(str(name))
    return found


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
            pending = mgr.pending(user.name, server.name) if mgr else None
            if server.started is None and pending is None and not include_stopped:
                continue
            res = None
            if not self.all_servers:
                res = self.server_res(user, server.name)
                if not self.ident.can("read:servers", res):
                    continue
            state = self.all_state or self.ident.can(
                "admin:server_state", res or self.server_res(user, server.name))
            ready = bool(mgr.is_ready(user.name, server.name)) if mgr else False
            out[server.name] = server_model(user.name, server, self.base_url, pending, ready,
                                            include_state=state)
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
