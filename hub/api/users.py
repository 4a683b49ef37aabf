"""``/hub/api/users`` — list, create, read, modify, delete users; report activity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from hub.api import pagination
from hub.api.base import APIHandler
from hub.api.models import USER_BY_NAME, USER_COLUMNS, UserData, load_users, user_model, user_models
from hub.db.database import transaction
from hub.db.models import Server, User, utcnow
from hub.handlers.base import HubError
from hub.services import names, users
from hub.services import scopes as sc
from hub.services.users import UserError


def _user_error(e: UserError) -> HubError:
    return HubError(e.status, str(e))


def _include_stopped(handler: APIHandler) -> bool:
    """``?include_stopped_servers`` (a bare flag, as JupyterHub documents it) or ``=1/true``."""
    raw = handler.get_argument("include_stopped_servers", None)
    return raw is not None and raw.lower() not in ("0", "false", "no")


#: ``sort=`` keys of ``GET /users`` (JupyterHub 5); ``-key`` sorts descending.
SORT_KEYS: dict[str, Any] = {"id": User.id, "name": User.name,
                             "last_activity": User.last_activity}


def _sort_order(raw: str) -> list[Any]:
    """ORDER BY terms for ``sort=[-]id|name|last_activity``; ties broken by id.

    Users never active sort last either way (as "oldest" ascending, at the end descending).
    """
    key = raw.removeprefix("-")
    if raw and key not in SORT_KEYS:
        raise HubError(400, "sort must be one of id, name, last_activity (optionally with "
                            "a leading -)")
    if not raw or key == "id":
        return [User.id.desc() if raw.startswith("-") else User.id]
    column = SORT_KEYS[key]
    term = column.desc().nulls_last() if raw.startswith("-") else column.asc().nulls_last()
    return [term, User.id]


class UserListHandler(APIHandler):
    """``GET`` lists users (paginated, filtered); ``POST`` creates several."""

    def get(self) -> None:
        ident = self.identity
        assert ident is not None
        if not (sc.allows_any(set(ident.scopes), "list:users")
                or sc.allows_any(set(ident.scopes), "read:users")):
            raise HubError(403, "Action is not authorized with current scopes; "
                                "requires list:users")
        page = pagination.parse(self)
        state = self.get_argument("state", "")
        if state not in ("", "active", "ready", "inactive"):
            raise HubError(400, "state must be one of active, ready, inactive")
        name_filter = self.get_argument("name_filter", "")
        include_stopped = _include_stopped(self)
        where: list[Any] = []
        if name_filter:
            where.append(User.name.startswith(name_filter, autoescape=True))
        if state:
            active = select(Server.user_id).where(Server.started.is_not(None))
            where.append(User.id.in_(active) if state in ("active", "ready")
                         else User.id.not_in(active))
        if not (ident.can("list:users") or ident.can("read:users")):
            where.append(User.name.in_(self._visible_names()))
        order = _sort_order(self.get_argument("sort", ""))
        with transaction(self.hub.db) as session:
            # Only the paginated envelope shows the total: a bare list skips counting.
            conn = session.connection()  # Core statements: no ORM compile step
            total = (conn.execute(select(func.count()).select_from(User.__table__)
                                  .where(*where)).scalar() or 0 if page.wanted else 0)
            rows = conn.execute(select(*USER_COLUMNS).where(*where).order_by(*order)
                                .offset(page.offset).limit(page.limit)).all()
            items = user_models(self, load_users(session, rows),
                                include_stopped=include_stopped)
        if state == "ready":
            items = [u for u in items if any(s.get("ready") for s in u.get("servers", {})
                                             .values())]
        pagination.respond(self, page, items, total)

    def _visible_names(self) -> list[str]:
        """Users named in the caller's filtered list/read scopes (user and group filters)."""
        assert self.identity is not None
        names: set[str] = set()
        groups: set[str] = set()
        for scope in self.identity.scopes:
            base, flt = sc.split(scope)
            if base not in ("list:users", "read:users") or not flt:
                continue
            kind, _, value = flt.partition("=")
            if kind == "user":
                names.add(value)
            elif kind == "group":
                groups.add(value)
        if groups:
            from hub.db.models import Group
            with transaction(self.hub.db) as session:
                for g in session.scalars(select(Group).where(Group.name.in_(groups))
                                         .options(selectinload(Group.users))):
                    names.update(u.name for u in g.users)
        return sorted(names)

    def post(self) -> None:
        data = self.json_body({"usernames": list, "admin": bool}, required=("usernames",))
        self.require("admin:users")
        if data.get("admin") and not self.identity_is_admin():
            raise HubError(403, "Only admins may create admins")
        if not all(isinstance(n, str) for n in data["usernames"]):
            raise HubError(400, "usernames must be a list of strings")
        if not data["usernames"]:
            raise HubError(400, "usernames must not be empty")
        with transaction(self.hub.db) as session:
            try:
                created = users.create_many(session, data["usernames"], bool(data.get("admin")))
            except UserError as e:
                raise _user_error(e) from None
            rows = [(u.id, u.name, u.admin, u.created, u.last_activity) for u in created]
            models = user_models(self, load_users(session, rows))
        self.write_json(models, 201)

    def identity_is_admin(self) -> bool:
        return bool(self.identity and self.identity.admin and
                    self.identity.can("admin:users"))


class UserHandler(APIHandler):
    """One user: ``GET``, ``POST`` (create), ``PATCH``, ``DELETE``."""

    def _res(self, name: str) -> sc.Resource:
        return sc.Resource(user=name)

    def _visible(self, user: User | UserData) -> bool:
        assert self.identity is not None
        groups = user.groups if isinstance(user, UserData) else [g.name for g in user.groups]
        res = sc.Resource(user=user.name, user_groups=frozenset(groups))
        return any(self.identity.can(s, res) for s in ("read:users", "read:users:name",
                                                       "admin:users"))

    def get(self, name: str) -> None:
        with transaction(self.hub.db) as session:
            row = session.connection().execute(
                USER_BY_NAME, {"name": names.normalize_username(name)}).first()
            found = load_users(session, [row]) if row is not None else []
            if not found or not self._visible(found[0]):
                raise HubError(404, f"No such user: {name}")
            self.write_json(user_model(self, found[0], include_stopped=_include_stopped(self)))

    def post(self, name: str) -> None:
        data = self.json_body({"admin": bool})
        self.require("admin:users")
        if data.get("admin") and not (self.identity and self.identity.admin):
            raise HubError(403, "Only admins may create admins")
        with transaction(self.hub.db) as session:
            try:
                user = users.create(session, name, admin=bool(data.get("admin")))
            except UserError as e:
                raise _user_error(e) from None
            self.write_json(user_model(self, user), 201)

    def patch(self, name: str) -> None:
        data = self.json_body({"name": str, "admin": bool})
        with transaction(self.hub.db) as session:
            user = users.get(session, name)
            if user is None or not self._visible(user):
                raise HubError(404, f"No such user: {name}")
            res = sc.Resource(user=user.name, user_groups=frozenset(g.name for g in user.groups))
            self.require("admin:users", res)
            assert self.identity is not None
            if ("admin" in data or user.admin) and not self.identity.admin:
                raise HubError(403, "Only admins may grant admin or modify admins")
            if "name" in data and data["name"] != user.name:
                if any(s.started is not None for s in user.servers):
                    raise HubError(400, "Cannot rename a user with running servers")
                try:
                    users.rename(session, user, data["name"])
                except UserError as e:
                    raise _user_error(e) from None
            if "admin" in data:
                user.admin = data["admin"]
            session.flush()
            self.write_json(user_model(self, user))

    async def delete(self, name: str) -> None:
        with transaction(self.hub.db) as session:
            user = users.get(session, name)
            if user is None or not self._visible(user):
                raise HubError(404, f"No such user: {name}")
            res = sc.Resource(user=user.name, user_groups=frozenset(g.name for g in user.groups))
            self.require("admin:users", res)
            assert self.identity is not None
            if user.admin and not self.identity.admin:
                raise HubError(403, "Only admins may delete admins")
            if self.identity.service is None and user.name == self.identity.name:
                raise HubError(400, "You cannot delete yourself")
            running = [s.name for s in user.servers if s.started is not None]
            canonical = user.name
        if self.hub.servers is not None:
            for server_name in running:
                await self.hub.servers.stop(canonical, server_name)
        with transaction(self.hub.db) as session:
            user = users.get(session, canonical)
            if user is not None:
                users.delete(session, user)
        self.set_status(204)
        self.finish()


class ActivityHandler(APIHandler):
    """``POST /users/<name>/activity`` — servers report when their user was last active."""

    def post(self, name: str) -> None:
        data = self.json_body({"last_activity": str, "servers": dict})
        with transaction(self.hub.db) as session:
            user = users.get(session, name)
            res = sc.Resource(user=name if user is None else user.name)
            if user is None or not self.identity or not self.identity.can("users:activity", res):
                raise HubError(404, f"No such user: {name}")
            stamps: list[datetime] = []
            by_name = {s.name: s for s in user.servers}
            for server_name, info in (data.get("servers") or {}).items():
                if not isinstance(info, dict) or not isinstance(info.get("last_activity"), str):
                    raise HubError(400, "servers must map names to {last_activity: ISO time}")
                stamp = _parse_time(info["last_activity"])
                server = by_name.get(server_name)
                if server is None:
                    raise HubError(400, f"No such server: {server_name}")
                if server.last_activity is None or stamp > server.last_activity:
                    server.last_activity = stamp
                stamps.append(stamp)
            if "last_activity" in data:
                stamps.append(_parse_time(data["last_activity"]))
            if stamps:
                latest = max(stamps)
                if user.last_activity is None or latest > user.last_activity:
                    user.last_activity = latest
        self.set_status(204)
        self.finish()


def _parse_time(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or offset) as naive UTC; future times clamp to now."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HubError(400, f"Invalid ISO 8601 time: {text[:64]!r}") from None
    if dt.tzinfo is not None:
        from datetime import UTC
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return min(dt, utcnow())



routes = [
    (r"api/users", UserListHandler),
    (r"api/users/([^/]+)", UserHandler),
    (r"api/users/([^/]+)/activity", ActivityHandler),
]
