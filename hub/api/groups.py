"""``/hub/api/groups`` — list, create, read and delete groups; members and properties.

Scopes: listing needs ``list:groups`` (or ``read:groups``), reading a group ``read:groups`` (the
model is trimmed to ``kind`` and ``name`` with only ``read:groups:name``), membership and
properties ``groups``, deleting ``admin:groups``; each may be filtered with ``!group=NAME``.
Creating needs an *unfiltered* ``admin:groups``: a filtered scope never authorizes a request
whose resource does not exist yet. A group the caller may not see answers 404, like a missing one.

Membership changes are checked against privilege escalation (SECURITY.md 9): a caller who is
not an admin cannot add themselves to a group, nor add anyone to a group whose roles grant
scopes the caller does not hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hub.api import pagination
from hub.api.base import APIHandler
from hub.api.models import group_model
from hub.db.database import transaction
from hub.db.models import Group, User
from hub.handlers.base import HubError
from hub.services import groups
from hub.services import scopes as sc

LIST_SCOPES = ("list:groups", "read:groups")


@contextmanager
def _answering() -> Iterator[None]:
    """A :class:`groups.GroupError` becomes its HTTP answer (its message is safe to show)."""
    try:
        yield
    except groups.GroupError as e:
        raise HubError(e.status, str(e)) from None


def _str_list(data: dict[str, Any], key: str) -> list[str]:
    values = data.get(key, [])
    if not all(isinstance(v, str) for v in values):
        raise HubError(400, f"{key} must be a list of strings")
    return list(values)


class _GroupBase(APIHandler):
    """Lookup with the 404-unless-visible rule, and the membership checks."""

    def _find(self, group: Group | None, name: str, needed: str) -> Group:
        """``group`` if the caller may see it (else 404) and do ``needed`` on it (else 403)."""
        assert self.identity is not None
        res = sc.Resource(group=name)
        if group is None or not self.identity.can("read:groups:name", res):
            raise HubError(404, f"No such group: {name}")
        if not self.identity.can(needed, res):
            raise HubError(403, f"Action is not authorized with current scopes; "
                                f"requires {needed}")
        return group

    def _check_additions(self, group: Group | None, added: list[User]) -> None:
        """Refuse self-service membership and scopes the caller could not grant."""
        ident = self.identity
        assert ident is not None
        if ident.admin or not added:
            return
        if ident.service is None and any(u.name == ident.name for u in added):
            raise HubError(403, "Only admins may add themselves to a group")
        raw = [s for role in (group.roles if group else []) for s in role.scopes or []]
        if not raw:
            return
        for user in added:
            wanted = sc.expand(raw, owner=user.name)
            missing = sorted(wanted - sc.intersect(wanted, set(ident.scopes)))
            if missing:
                raise HubError(403, f"Adding members to {group.name if group else ''} would "
                                    f"grant scopes you do not hold: {', '.join(missing[:10])}")


class GroupListHandler(_GroupBase):
    """``GET`` lists groups (paginated); ``POST {"groups": [...], "users"?: [...]}`` creates
    several, each with those members (201)."""

    def get(self) -> None:
        ident = self.identity
        assert ident is not None
        held = set(ident.scopes)
        if not any(sc.allows_any(held, s) for s in LIST_SCOPES):
            raise HubError(403, "Action is not authorized with current scopes; "
                                "requires list:groups")
        page = pagination.parse(self)
        visible = None if any(ident.can(s) for s in LIST_SCOPES) else self._visible_names()
        with transaction(self.hub.db) as session:
            found, total = groups.list_page(session, page.offset, page.limit, visible)
            items = [group_model(self, g) for g in found]
        pagination.respond(self, page, items, total)

    def _visible_names(self) -> list[str]:
        """Groups named by the caller's ``!group=`` filtered list/read scopes."""
        assert self.identity is not None
        out: set[str] = set()
        for scope in self.identity.scopes:
            base, flt = sc.split(scope)
            if base in LIST_SCOPES and flt and flt.startswith("group="):
                out.add(flt[len("group="):])
        return sorted(out)

    def post(self) -> None:
        data = self.json_body({"groups": list, "users": list, "properties": dict},
                              required=("groups",))
        names = _str_list(data, "groups")
        usernames = _str_list(data, "users")
        self.require("admin:groups")
        with transaction(self.hub.db) as session, _answering():
            members = groups.find_users(session, usernames)
            self._check_additions(None, members)
            created = groups.create_many(session, names, members, data.get("properties"))
            models = [group_model(self, g) for g in created]
        self.write_json(models, 201)


class GroupHandler(_GroupBase):
    """One group: ``GET``, ``POST`` (create, 201; 409 if it exists), ``DELETE`` (204)."""

    def get(self, name: str) -> None:
        with transaction(self.hub.db) as session:
            group = self._find(groups.get(session, name), name, "read:groups:name")
            self.write_json(group_model(self, group))

    def post(self, name: str) -> None:
        data = self.json_body({"users": list, "properties": dict})
        usernames = _str_list(data, "users")
        self.require("admin:groups")  # unfiltered: the group does not exist yet
        with transaction(self.hub.db) as session, _answering():
            members = groups.find_users(session, usernames)
            self._check_additions(None, members)
            group = groups.create(session, name, members, data.get("properties"))
            self.write_json(group_model(self, group), 201)

    def delete(self, name: str) -> None:
        with transaction(self.hub.db) as session:
            groups.delete(session, self._find(groups.get(session, name), name, "admin:groups"))
        self.set_status(204)
        self.finish()


class GroupUsersHandler(_GroupBase):
    """``POST``/``DELETE {"users": [...]}`` add or remove members; answers the group (200)."""

    def post(self, name: str) -> None:
        data = self.json_body({"users": list}, required=("users",))
        usernames = _str_list(data, "users")
        with transaction(self.hub.db) as session, _answering():
            group = self._find(groups.get(session, name), name, "groups")
            members = groups.find_users(session, usernames)
            self._check_additions(group, members)
            groups.add_users(group, members)
            session.flush()
            self.write_json(group_model(self, group))

    def delete(self, name: str) -> None:
        data = self.json_body({"users": list}, required=("users",))
        usernames = _str_list(data, "users")
        with transaction(self.hub.db) as session, _answering():
            group = self._find(groups.get(session, name), name, "groups")
            groups.remove_users(group, groups.find_users(session, usernames))
            session.flush()
            self.write_json(group_model(self, group))


class GroupPropertiesHandler(_GroupBase):
    """``PUT`` replaces the group's properties with the JSON object sent (200, the group)."""

    def put(self, name: str) -> None:
        data = self.json_body()
        if not isinstance(data, dict):
            raise HubError(400, "Group properties must be a JSON object")
        with transaction(self.hub.db) as session:
            group = self._find(groups.get(session, name), name, "groups")
            groups.set_properties(group, data)
            session.flush()
            self.write_json(group_model(self, group))


routes = [
    (r"api/groups", GroupListHandler),
    (r"api/groups/([^/]+)", GroupHandler),
    (r"api/groups/([^/]+)/users", GroupUsersHandler),
    (r"api/groups/([^/]+)/properties", GroupPropertiesHandler),
]
