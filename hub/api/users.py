"""``/hub/api/users`` — list, create, read, modify, delete users; report activity.

Queries live in :mod:`hub.services.user_list` (reading) and :mod:`hub.services.users`
(changes); these handlers parse, authorize, call and answer. A user the caller may not see
answers 404, like a missing one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hub.api import pagination
from hub.api.base import APIHandler
from hub.api.models import user_model, user_models
from hub.db.database import transaction
from hub.db.models import User, utcnow
from hub.handlers.base import HubError
from hub.services import auth_state, user_list, users
from hub.services import scopes as sc
from hub.services.user_list import UserData
from hub.services.users import UserError

#: Scopes that let a caller list users (``read:users`` implies listing, as in JupyterHub).
#: Listing users needs ``list:users`` (possibly filtered), as in JupyterHub: a user's own
#: ``read:users!user=NAME`` is not enough, which is how tools tell an admin token from a user's.
LIST_SCOPES = ("list:users",)
#: Scopes that let a caller see that a user exists.
SEE_SCOPES = ("read:users", "read:users:name", "admin:users")


def _user_error(e: UserError) -> HubError:
    return HubError(e.status, str(e))


def _include_stopped(handler: APIHandler) -> bool:
    """``?include_stopped_servers`` (a bare flag, as JupyterHub documents it) or ``=1/true``."""
    raw = handler.get_argument("include_stopped_servers", None)
    return raw is not None and raw.lower() not in ("0", "false", "no")


def _resource(user: User | UserData) -> sc.Resource:
    groups = user.groups if isinstance(user, UserData) else [g.name for g in user.groups]
    return sc.Resource(user=user.name, user_groups=frozenset(groups))


class UserListHandler(APIHandler):
    """``GET`` lists users (paginated, filtered); ``POST`` creates several."""

    def get(self) -> None:
        ident = self.identity
        assert ident is not None
        if not any(sc.allows_any(set(ident.scopes), s) for s in LIST_SCOPES):
            raise HubError(403, "Action is not authorized with current scopes; "
                                "requires list:users")
        page = pagination.parse(self)
        mgr = self.hub.servers
        query = user_list.UserQuery(
            offset=page.offset, limit=page.limit, state=self.get_argument("state", ""),
            name_filter=self.get_argument("name_filter", ""), sort=self.get_argument("sort", ""),
            visible=None if any(ident.can(s) for s in LIST_SCOPES) else self._visible(),
            is_ready=mgr.is_ready if mgr is not None else None)
        with transaction(self.hub.db) as session:
            try:
                # Only the paginated envelope shows the total: a bare list skips counting.
                found, total = user_list.list_page(session, query, count=page.wanted)
            except user_list.ListError as e:
                raise HubError(400, str(e)) from None
            items = user_models(self, found, include_stopped=_include_stopped(self))
        pagination.respond(self, page, items, total)

    def _visible(self) -> tuple[list[str], list[str]]:
        """Users and groups named by the caller's filtered list/read scopes."""
        assert self.identity is not None
        named: set[str] = set()
        groups: set[str] = set()
        for scope in self.identity.scopes:
            base, flt = sc.split(scope)
            if base not in LIST_SCOPES or not flt:
                continue
            kind, _, value = flt.partition("=")
            if kind == "user":
                named.add(value)
            elif kind == "group":
                groups.add(value)
        return sorted(named), sorted(groups)

    def post(self) -> None:
        data = self.json_body({"usernames": list, "admin": bool}, required=("usernames",))
        self.require("admin:users")
        if data.get("admin") and not _is_admin(self):
            raise HubError(403, "Only admins may create admins")
        if not all(isinstance(n, str) for n in data["usernames"]):
            raise HubError(400, "usernames must be a list of strings")
        if not data["usernames"]:
            raise HubError(400, "usernames must not be empty")
        with transaction(self.hub.db) as session:
            try:
                created = users.create_many(session, data["usernames"], bool(data.get("admin")),
                                           check=self.hub.accounts.check_name)
            except UserError as e:
                raise _user_error(e) from None
            models = user_models(self, user_list.of(session, created))
        self.write_json(models, 201)


def _is_admin(handler: APIHandler) -> bool:
    ident = handler.identity
    return bool(ident and ident.admin and ident.can("admin:users"))


class UserHandler(APIHandler):
    """One user: ``GET``, ``POST`` (create), ``PATCH``, ``DELETE``."""

    def _visible(self, user: User | UserData) -> bool:
        assert self.identity is not None
        res = _resource(user)
        return any(self.identity.can(s, res) for s in SEE_SCOPES)

    def _authorized(self, user: User | None, name: str, needed: str) -> User:
        """``user`` if the caller may see it (else 404) and do ``needed`` on it (else 403)."""
        if user is None or not self._visible(user):
            raise HubError(404, f"No such user: {name}")
        self.require(needed, _resource(user))
        return user

    def get(self, name: str) -> None:
        with transaction(self.hub.db) as session:
            found = user_list.get(session, name)
            if found is None or not self._visible(found):
                raise HubError(404, f"No such user: {name}")
            model = user_model(self, found, include_stopped=_include_stopped(self))
            assert self.identity is not None
            if self.identity.can("admin:auth_state", _resource(found)):
                model["auth_state"] = auth_state.load(session, self.hub.authenticator.auth_state,
                                                      found.name)
            self.write_json(model)

    def post(self, name: str) -> None:
        data = self.json_body({"admin": bool})
        self.require("admin:users")
        if data.get("admin") and not (self.identity and self.identity.admin):
            raise HubError(403, "Only admins may create admins")
        with transaction(self.hub.db) as session:
            try:
                user = users.create(session, name, admin=bool(data.get("admin")),
                                    check=self.hub.accounts.check_name)
            except UserError as e:
                raise _user_error(e) from None
            self.write_json(user_model(self, user), 201)

    def patch(self, name: str) -> None:
        data = self.json_body({"name": str, "admin": bool})
        assert self.identity is not None
        with transaction(self.hub.db) as session:
            user = self._authorized(users.get(session, name), name, "admin:users")
            if ("admin" in data or user.admin) and not self.identity.admin:
                raise HubError(403, "Only admins may grant admin or modify admins")
            try:
                users.modify(session, user, name=data.get("name"), admin=data.get("admin"),
                             check=self.hub.accounts.check_rename)
            except UserError as e:
                raise _user_error(e) from None
            self.write_json(user_model(self, user))

    async def delete(self, name: str) -> None:
        assert self.identity is not None
        with transaction(self.hub.db) as session:
            user = self._authorized(users.get(session, name), name, "admin:users")
            if user.admin and not self.identity.admin:
                raise HubError(403, "Only admins may delete admins")
            if self.identity.service is None and user.name == self.identity.name:
                raise HubError(400, "You cannot delete yourself")
            running = [s.name for s in user.servers if s.started is not None]
            canonical = user.name
        for server_name in running:
            await self.hub.servers.stop(canonical, server_name)
        with transaction(self.hub.db) as session:
            gone = users.get(session, canonical)
            if gone is not None:
                users.delete(session, gone)
        self.set_status(204)
        self.finish()


class ActivityHandler(APIHandler):
    """``POST /users/<name>/activity`` — servers report when their user was last active."""

    def post(self, name: str) -> None:
        data = self.json_body({"last_activity": str, "servers": dict})
        servers: dict[str, datetime] = {}
        for server_name, info in (data.get("servers") or {}).items():
            if not isinstance(info, dict) or not isinstance(info.get("last_activity"), str):
                raise HubError(400, "servers must map names to {last_activity: ISO time}")
            servers[server_name] = _parse_time(info["last_activity"])
        last = _parse_time(data["last_activity"]) if "last_activity" in data else None
        with transaction(self.hub.db) as session:
            user = users.get(session, name)
            res = sc.Resource(user=name if user is None else user.name)
            if user is None or not self.identity or not self.identity.can("users:activity", res):
                raise HubError(404, f"No such user: {name}")
            try:
                users.record_activity(user, servers, last)
            except UserError as e:
                raise _user_error(e) from None
        self.set_status(204)
        self.finish()


def _parse_time(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or offset) as naive UTC; future times clamp to now."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HubError(400, f"Invalid ISO 8601 time: {text[:64]!r}") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return min(dt, utcnow())


routes = [
    (r"api/users", UserListHandler),
    (r"api/users/([^/]+)", UserHandler),
    (r"api/users/([^/]+)/activity", ActivityHandler),
]
