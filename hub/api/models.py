"""JSON models of users, servers, groups and services, trimmed to what the caller may read."""

from __future__ import annotations

from typing import Any

from hub.api.base import APIHandler
from hub.db.models import Group, User, isoformat
from hub.services import scopes as sc
from hub.services.rbac import Service
from hub.services.users import role_names, server_model


def _resource(user: User) -> sc.Resource:
    return sc.Resource(user=user.name, user_groups=frozenset(g.name for g in user.groups))


def server_models(handler: APIHandler, user: User, include_stopped: bool = False,
                  ) -> dict[str, Any]:
    """``{server_name: model}`` of the user's active (or all) servers."""
    mgr = handler.hub.servers
    ident = handler.identity
    assert ident is not None
    out: dict[str, Any] = {}
    for server in user.servers:
        pending = mgr.pending(user.name, server.name) if mgr else None
        if server.started is None and pending is None and not include_stopped:
            continue
        res = sc.Resource(user=user.name, server=f"{user.name}/{server.name}",
                          user_groups=frozenset(g.name for g in user.groups))
        if not ident.can("read:servers", res):
            continue
        ready = bool(mgr.is_ready(user.name, server.name)) if mgr else False
        out[server.name] = server_model(server, handler.hub.config.base_url, pending, ready,
                                        include_state=ident.can("admin:server_state", res))
    return out


def user_model(handler: APIHandler, user: User, full: bool = False,
               include_stopped: bool = False) -> dict[str, Any]:
    """JupyterHub's user model; only ``kind`` and ``name`` without ``read:users``."""
    ident = handler.identity
    assert ident is not None
    res = _resource(user)
    model: dict[str, Any] = {"kind": "user", "name": user.name}
    if not (full or ident.can("read:users", res)):
        return model
    servers = server_models(handler, user, include_stopped)
    default = servers.get("")
    model.update({
        "admin": user.admin,
        "roles": role_names(user),
        "groups": sorted(g.name for g in user.groups),
        "server": default["url"] if default and default["ready"] else None,
        "pending": default["pending"] if default else None,
        "created": isoformat(user.created),
        "last_activity": isoformat(user.last_activity),
        "servers": servers,
    })
    return model


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
