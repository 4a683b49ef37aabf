"""Reading users for the REST API: one user, or a filtered, sorted page of them.

Users are loaded with plain (Core) queries into :class:`UserData` — no ORM objects — because a
page of 200 users is the API's hottest read: one query for the page, two more for the servers,
groups and roles of all its users (:func:`load_users`), whatever the page size.

:func:`list_page` applies every filter in SQL, before ``OFFSET``/``LIMIT``, so a page is full
whenever enough users match and ``total`` counts exactly the matching users. Readiness is not
stored (the server manager knows it): ``state=ready`` is turned into the ids of users with a
ready server before the query.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import bindparam, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from hub.db.models import Group, Role, Server, User, group_roles, user_groups, user_roles
from hub.services import names

STATES = ("active", "ready", "inactive")
#: ``sort=`` keys of ``GET /users`` (JupyterHub 5); ``-key`` sorts descending.
SORT_KEYS = ("id", "name", "last_activity")


class ListError(ValueError):
    """A listing parameter is invalid (the message is for the caller)."""


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
    """What a user model shows, loaded with plain queries (see :func:`load_users`).
    ``roles`` are the user's own roles, then their groups' roles."""

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


@dataclass(frozen=True)
class UserQuery:
    """A ``GET /users`` request. ``visible``, when set, limits the answer to the users named
    and the members of the groups named (a caller whose scopes are all filtered);
    ``is_ready(user, server)`` tells which servers are ready."""

    offset: int = 0
    limit: int = 50
    state: str = ""
    name_filter: str = ""
    sort: str = ""
    visible: tuple[Sequence[str], Sequence[str]] | None = None
    is_ready: Callable[[str, str], bool] | None = None


_U, _S, _G, _R = User.__table__.c, Server.__table__.c, Group.__table__.c, Role.__table__.c
#: Core columns: a statement built from them skips the ORM's compile step (a third of a
#: simple query's cost).
_USER_COLUMNS = (_U.id, _U.name, _U.admin, _U.created, _U.last_activity)
_USER_BY_NAME = select(*_USER_COLUMNS).where(_U.name == bindparam("name"))
_SORT_COLUMNS = {"id": _U.id, "name": _U.name, "last_activity": _U.last_activity}


def get(session: Session, name: str) -> UserData | None:
    """The user called ``name`` (normalized), with servers, groups and roles, or None."""
    row = session.connection().execute(
        _USER_BY_NAME, {"name": names.normalize_username(name)}).first()
    return load_users(session, [row])[0] if row is not None else None


def of(session: Session, users: Iterable[User]) -> list[UserData]:
    """:class:`UserData` of users created or changed in this session (one load for all)."""
    return load_users(session, [(u.id, u.name, u.admin, u.created, u.last_activity)
                                for u in users])


def list_page(session: Session, query: UserQuery, count: bool) -> tuple[list[UserData], int]:
    """One page of users matching ``query``, and (when ``count``) how many match in all."""
    if query.state and query.state not in STATES:
        raise ListError("state must be one of active, ready, inactive")
    order = _sort_order(query.sort)
    where = _filters(session, query)
    conn = session.connection()
    total = 0
    if count:
        total = conn.execute(select(func.count()).select_from(User.__table__)
                             .where(*where)).scalar() or 0
    rows = conn.execute(select(*_USER_COLUMNS).where(*where).order_by(*order)
                        .offset(query.offset).limit(query.limit)).all()
    return load_users(session, rows), total


def _filters(session: Session, query: UserQuery) -> list[Any]:
    where: list[Any] = []
    if query.name_filter:
        where.append(_U.name.startswith(query.name_filter, autoescape=True))
    active = select(_S.user_id).where(_S.started.is_not(None))
    if query.state == "active":
        where.append(_U.id.in_(active))
    elif query.state == "inactive":
        where.append(_U.id.not_in(active))
    elif query.state == "ready":
        where.append(_U.id.in_(_ready_ids(session, query.is_ready)))
    if query.visible is not None:
        users, groups = query.visible
        ug = user_groups.c
        members = (select(ug.user_id).join(Group.__table__, _G.id == ug.group_id)
                   .where(_G.name.in_(list(groups))))
        where.append(or_(_U.name.in_(list(users)), _U.id.in_(members)))
    return where


def _ready_ids(session: Session, is_ready: Callable[[str, str], bool] | None) -> list[int]:
    """Ids of users with a ready server: of the started servers, those the manager says are
    ready (a handful of rows: one per running server)."""
    if is_ready is None:
        return []
    rows = session.connection().execute(
        select(_U.id, _U.name, _S.name).join(Server.__table__, _S.user_id == _U.id)
        .where(_S.started.is_not(None))).tuples()
    ready: set[int] = set()
    for uid, user, server in rows:
        if is_ready(user, server):
            ready.add(uid)
    return sorted(ready)


def _sort_order(raw: str) -> list[Any]:
    """ORDER BY terms for ``sort=[-]id|name|last_activity``; ties broken by id.

    Users never active sort last either way (as "oldest" ascending, at the end descending).
    """
    key = raw.removeprefix("-")
    if raw and key not in SORT_KEYS:
        raise ListError("sort must be one of id, name, last_activity (optionally with a "
                        "leading -)")
    descending = raw.startswith("-")
    if not raw or key == "id":
        return [_U.id.desc() if descending else _U.id]
    column = _SORT_COLUMNS[key]
    term = column.desc().nulls_last() if descending else column.asc().nulls_last()
    return [term, _U.id]


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
    """Users from rows of ``(id, name, admin, created, last_activity)``, completed with their
    servers, groups and roles in two more queries, whatever the number of users."""
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
