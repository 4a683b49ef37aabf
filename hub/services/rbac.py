"""Roles, groups and external services: their rules, and loading them from the config file.

Roles are database rows (:class:`hub.db.models.Role`) bundling scopes; users get them directly
or through their groups. The built-in roles (``admin``, ``user``, ``server``, ``token``) are
not rows and their names are reserved: admin rights come from the admin flag only.

At start-up :func:`load_config` applies the ``groups``, ``roles`` and ``services`` settings,
idempotently, in one transaction:

- ``groups``: each group is created if missing; listed users (created if missing) are added and
  listed properties set; nothing is ever removed (as JupyterHub's ``load_groups``).
- ``roles``: each role is created or updated (scopes, description); for each of ``users``,
  ``groups`` and ``services`` that the entry lists, that membership is replaced by the list.
- ``services``: the registry of external services; each ``api_token`` is stored hashed as a
  ``kind='service'`` token carrying the service's expanded scopes (from its roles, and the
  admin role when ``admin = true``); tokens of services no longer configured are deleted.

Anything invalid raises :class:`RBACError` with a message naming the offending entry.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.config import Config
from hub.db.models import APIToken, Group, Role, User
from hub.services import groups as grp
from hub.services import scopes as sc
from hub.services import tokens, users

ROLE_NAME = re.compile(r"^[a-z][a-z0-9_~.-]{1,253}[a-z0-9]$")
SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$")
MIN_SERVICE_TOKEN = 8


class RBACError(ValueError):
    """A role, group or service is invalid; ``status`` is what an API or CLI reports."""

    status = 400


class RoleExists(RBACError):
    status = 409


class NoSuchRole(RBACError):
    status = 404


@dataclass(frozen=True)
class RoleSpec:
    """A ``roles`` entry; a membership list that is None is left as it is."""

    name: str
    description: str
    scopes: tuple[str, ...]
    users: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    services: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GroupSpec:
    """A ``groups`` entry."""

    name: str
    users: tuple[str, ...] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    """An external service from the ``services`` setting (read-only at run time).

    ``roles`` and ``scopes`` (expanded) are filled in by :func:`load_config`.
    """

    name: str
    url: str = ""
    admin: bool = False
    display: bool = True
    info: Mapping[str, Any] = field(default_factory=dict)
    api_token: str = field(default="", repr=False)  # plaintext from the config file
    #: A managed service: the command the hub runs and keeps running, with extra environment.
    command: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    roles: tuple[str, ...] = ()
    scopes: frozenset[str] = frozenset()


# --- validation -------------------------------------------------------------------------
def check_role_name(name: str) -> str:
    """``name`` if it may name a custom role (3-255 of a-z 0-9 _ ~ . -, not a built-in)."""
    if name in sc.BUILTIN_ROLES:
        raise RBACError(f"role name {name!r} is reserved for a built-in role"
                        + (" (make admins with admin_users or `himalia users set-admin`)"
                           if name == "admin" else ""))
    if not ROLE_NAME.match(name):
        raise RBACError(f"invalid role name {name[:64]!r}: 3-255 characters of a-z, 0-9, "
                        "'_', '~', '.', '-', starting with a letter, ending with a letter "
                        "or digit")
    return name


def check_scopes(scopes: Iterable[str], where: str) -> tuple[str, ...]:
    """The scopes, each checked by :func:`hub.services.scopes.validate`."""
    out = []
    for scope in scopes:
        if not isinstance(scope, str):
            raise RBACError(f"{where}: scopes must be strings")
        try:
            sc.validate(scope)
        except sc.ScopeError as e:
            raise RBACError(f"{where}: {e}") from None
        out.append(scope)
    return tuple(out)


def _check_keys(entry: Any, where: str, allowed: Mapping[str, type | tuple[type, ...]],
                ) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise RBACError(f"{where}: must be a table")
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise RBACError(f"{where}: unknown keys {', '.join(map(str, unknown))}")
    for key, typ in allowed.items():
        if key in entry and not isinstance(entry[key], typ):
            raise RBACError(f"{where}: {key} has the wrong type")
    if not isinstance(entry.get("name"), str) or not entry["name"]:
        raise RBACError(f"{where}: name is required")
    return entry


def _names(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in entry:
        return None
    values = entry[key]
    if not all(isinstance(v, str) for v in values):
        raise RBACError(f"{where}: {key} must be a list of strings")
    return tuple(values)


def _unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise RBACError(f"{what} {name!r} is defined twice")
        seen.add(name)


def parse_roles(raw: Sequence[Any]) -> list[RoleSpec]:
    """Check the ``roles`` setting."""
    out = []
    for i, entry in enumerate(raw):
        where = f"roles[{i}]"
        _check_keys(entry, where, {"name": str, "description": str, "scopes": list,
                                   "users": list, "groups": list, "services": list})
        where = f"role {entry['name'][:64]!r}"
        name = _wrap(check_role_name, entry["name"], where)
        out.append(RoleSpec(
            name=name, description=entry.get("description", ""),
            scopes=check_scopes(entry.get("scopes", []), where),
            users=_names(entry, "users", where), groups=_names(entry, "groups", where),
            services=_names(entry, "services", where),
        ))
    _unique([r.name for r in out], "role")
    return out


def parse_groups(raw: Sequence[Any]) -> list[GroupSpec]:
    """Check the ``groups`` setting."""
    out = []
    for i, entry in enumerate(raw):
        _check_keys(entry, f"groups[{i}]", {"name": str, "users": list, "properties": dict})
        where = f"group {entry['name'][:64]!r}"
        name = _wrap(grp.clean_name, entry["name"], where)
        out.append(GroupSpec(name, _names(entry, "users", where) or (),
                             dict(entry.get("properties", {}))))
    _unique([g.name for g in out], "group")
    return out


def parse_services(raw: Sequence[Any]) -> list[Service]:
    """Check the ``services`` setting (error messages never include a token)."""
    out = []
    for i, entry in enumerate(raw):
        _check_keys(entry, f"services[{i}]", {"name": str, "url": str, "api_token": str,
                                              "admin": bool, "display": bool, "info": dict,
                                              "command": list, "environment": dict})
        name = entry["name"]
        if not SERVICE_NAME.match(name):
            raise RBACError(f"services[{i}]: invalid service name {name[:64]!r} (letters, "
                            "digits, '_', '.', '-', starting with a letter or digit)")
        url = entry.get("url", "")
        if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
            raise RBACError(f"service {name!r}: url must be an http(s) URL")
        token = entry.get("api_token", "")
        if token and (len(token) < MIN_SERVICE_TOKEN or token != token.strip()):
            raise RBACError(f"service {name!r}: api_token must be at least "
                            f"{MIN_SERVICE_TOKEN} characters, without surrounding spaces")
        command = entry.get("command", [])
        env = entry.get("environment", {})
        if not all(isinstance(x, str) for x in command) or \
                not all(isinstance(v, str) for v in env.values()):
            raise RBACError(f"service {name!r}: command and environment hold strings only")
        if command and not token:
            token = secrets.token_hex(32)  # a managed service gets one per hub start
        out.append(Service(name=name, url=url, admin=entry.get("admin", False),
                           display=entry.get("display", True), info=dict(entry.get("info", {})),
                           api_token=token, command=tuple(command), environment=dict(env)))
    _unique([s.name for s in out], "service")
    tokens_seen = [s.api_token for s in out if s.api_token]
    if len(set(tokens_seen)) != len(tokens_seen):
        raise RBACError("two services share one api_token")
    return out


def _wrap(check: Any, value: str, where: str) -> str:
    try:
        return str(check(value))
    except (RBACError, grp.GroupError) as e:
        raise RBACError(f"{where}: {e}") from None


# --- roles in the database --------------------------------------------------------------
def get_role(session: Session, name: str) -> Role | None:
    return session.scalar(select(Role).where(Role.name == name))


def require_role(session: Session, name: str) -> Role:
    role = get_role(session, name)
    if role is None:
        raise NoSuchRole(f"No such role: {name}")
    return role


def create_role(session: Session, name: str, scopes: Sequence[str], description: str = "",
                ) -> Role:
    """A new custom role; :class:`RoleExists` if the name is taken."""
    check_role_name(name)
    if get_role(session, name) is not None:
        raise RoleExists(f"role {name} already exists")
    role = Role(name=name, scopes=list(check_scopes(scopes, f"role {name!r}")),
                description=description)
    session.add(role)
    session.flush()
    return role


def holders(session: Session, role: Role) -> tuple[list[User], list[Group]]:
    """Users and groups that hold ``role`` directly."""
    members = list(session.scalars(select(User).where(User.roles.contains(role))
                                   .order_by(User.name)))
    teams = list(session.scalars(select(Group).where(Group.roles.contains(role))
                                 .order_by(Group.name)))
    return members, teams


def grant(role: Role, members: Iterable[User] = (), teams: Iterable[Group] = ()) -> None:
    """Give ``role`` to users and groups (holding it already is fine)."""
    for holder in [*(m.roles for m in members), *(t.roles for t in teams)]:
        if role not in holder:
            holder.append(role)


def revoke(role: Role, members: Iterable[User] = (), teams: Iterable[Group] = ()) -> None:
    """Take ``role`` from users and groups (not holding it is fine)."""
    for holder in [*(m.roles for m in members), *(t.roles for t in teams)]:
        if role in holder:
            holder.remove(role)


def role_table(session: Session) -> dict[str, list[str]]:
    """``{name: scopes}`` of every custom role (what ``HubContext.custom_roles`` holds)."""
    return {r.name: list(r.scopes or []) for r in session.scalars(select(Role))}


def scopes_of_roles(session: Session, names: Iterable[str]) -> list[str]:
    """The scopes of the roles named, built-in or stored; :class:`RBACError` (400) if unknown."""
    out: list[str] = []
    for name in names:
        if name in sc.BUILTIN_ROLES:
            out.extend(sc.BUILTIN_ROLES[name])
            continue
        row = get_role(session, name)
        if row is None:
            raise RBACError(f"No such role: {name[:64]}")
        out.extend(row.scopes or [])
    return out


# --- start-up loading -------------------------------------------------------------------
def load_config(session: Session, cfg: Config) -> dict[str, Service]:
    """Apply the ``groups``, ``roles`` and ``services`` settings; returns the services."""
    services = parse_services(cfg.services)
    roles = parse_roles(cfg.roles)
    known = {s.name for s in services}
    for spec in roles:
        unknown = sorted(set(spec.services or ()) - known)
        if unknown:
            raise RBACError(f"role {spec.name!r}: unknown services {', '.join(unknown)} "
                            "(define them in services)")
    for gspec in parse_groups(cfg.groups):
        _load_group(session, gspec)
    for spec in roles:
        _load_role(session, spec)
    registry = {s.name: _with_scopes(s, roles) for s in services}
    _sync_service_tokens(session, registry)
    session.flush()
    return registry


def _user(session: Session, name: str, where: str) -> User:
    try:
        return users.get(session, name) or users.create(session, name)
    except users.UserError as e:
        raise RBACError(f"{where}: {e}") from None


def _group(session: Session, name: str, where: str) -> Group:
    found = grp.get(session, name)
    if found is not None:
        return found
    try:
        return grp.create(session, name)
    except grp.GroupError as e:
        raise RBACError(f"{where}: {e}") from None


def _load_group(session: Session, spec: GroupSpec) -> None:
    where = f"group {spec.name!r}"
    group = _group(session, spec.name, where)
    grp.add_users(group, [_user(session, n, where) for n in spec.users])
    if spec.properties:
        group.properties = {**(group.properties or {}), **spec.properties}


def _load_role(session: Session, spec: RoleSpec) -> None:
    where = f"role {spec.name!r}"
    role = get_role(session, spec.name)
    if role is None:
        role = create_role(session, spec.name, spec.scopes, spec.description)
    else:
        role.scopes, role.description = list(spec.scopes), spec.description
    if spec.users is not None:
        wanted = [_user(session, n, where) for n in spec.users]
        current, _ = holders(session, role)
        revoke(role, [u for u in current if u not in wanted])
        grant(role, wanted)
    if spec.groups is not None:
        teams = [_group(session, n, where) for n in spec.groups]
        _, current_teams = holders(session, role)
        revoke(role, teams=[g for g in current_teams if g not in teams])
        grant(role, teams=teams)


def _with_scopes(service: Service, roles: Sequence[RoleSpec]) -> Service:
    held = [r for r in roles if service.name in (r.services or ())]
    names = (["admin"] if service.admin else []) + [r.name for r in held]
    raw = list(sc.BUILTIN_ROLES["admin"]) if service.admin else []
    for role in held:
        raw.extend(role.scopes)
    scopes = frozenset(sc.expand(raw))
    return dataclasses.replace(service, roles=tuple(names), scopes=scopes)


def _sync_service_tokens(session: Session, registry: Mapping[str, Service]) -> None:
    """One ``kind='service'`` token row per configured token.

    A row whose service still has the same token is kept (its scopes refreshed); every other
    service row is deleted first, so tokens may even move between services.
    """
    wanted = {tokens.hash_token(s.api_token): s for s in registry.values() if s.api_token}
    kept: set[str] = set()
    for row in session.scalars(select(APIToken).where(APIToken.kind == "service")):
        service = wanted.get(row.hashed)
        if service is not None and service.name == row.service_name:
            row.scopes = sorted(service.scopes)
            kept.add(row.hashed)
        else:
            session.delete(row)
    session.flush()
    for hashed, service in wanted.items():
        if hashed in kept:
            continue
        if session.scalar(select(APIToken.id).where(APIToken.hashed == hashed)) is not None:
            raise RBACError(f"service {service.name!r}: its api_token is already in use "
                            "by another token; choose a new random one")
        tokens.create(session, user_id=None, kind="service", service_name=service.name,
                      scopes=sorted(service.scopes), note=f"service {service.name}",
                      secret=service.api_token)
