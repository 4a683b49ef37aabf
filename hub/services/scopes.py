"""RBAC scopes: expansion, filters and checks. Pure logic, no I/O.

A scope is ``name`` or ``name!filter``. Filters narrow a scope to one resource:
``!user=NAME`` (the user and their servers), ``!server=NAME/SERVER`` (one server; the default
server is ``NAME/``), ``!group=NAME`` (the group and its members). Roles may use the relative
filters ``!user`` and ``!server``, and the meta scope ``self``; :func:`expand` resolves them for the
owner. ``inherit`` (the ``token`` role) means "everything the owner may do".
A token never exceeds its owner: :func:`intersect` keeps only what the owner also holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Each scope with the narrower scopes it implies.
SCOPE_TREE: dict[str, tuple[str, ...]] = {
    "admin:users": ("admin:auth_state", "users", "read:roles:users", "admin:server_state"),
    "users": ("read:users", "list:users", "users:activity"),
    "read:users": ("read:users:name", "read:users:groups", "read:users:activity"),
    "list:users": ("read:users:name",),
    "admin:servers": ("admin:server_state", "servers"),
    "servers": ("read:servers", "delete:servers"),
    "read:servers": ("read:users:name",),
    "tokens": ("read:tokens",),
    "admin:groups": ("groups",),
    "groups": ("read:groups", "list:groups"),
    "read:groups": ("read:groups:name",),
    "list:groups": ("read:groups:name",),
    "read:roles": ("read:roles:users", "read:roles:groups", "read:roles:services"),
    "admin:services": ("services",),
    "services": ("read:services", "list:services"),
    "read:services": ("read:services:name",),
    "list:services": ("read:services:name",),
    "access:servers": (),
    "access:services": (),
    "proxy": (),
    "shutdown": (),
    "read:hub": (),
    "read:metrics": (),
    "users:activity": (),
    "delete:servers": (),
    "read:tokens": (),
    "read:users:name": (),
    "read:users:groups": (),
    "read:users:activity": (),
    "read:groups:name": (),
    "read:services:name": (),
    "read:roles:users": (),
    "read:roles:groups": (),
    "read:roles:services": (),
    "admin:auth_state": (),
    "admin:server_state": (),
}

#: Scopes that "self" grants, each filtered to the owner.
SELF_SCOPES = (
    "read:users", "users:activity", "servers", "access:servers", "tokens", "read:groups:name",
    "read:roles:users",
)

BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "admin": ("admin:users", "admin:servers", "tokens", "admin:groups", "admin:services",
              "read:roles", "access:servers", "access:services", "proxy", "shutdown",
              "read:hub", "read:metrics"),
    "user": ("self",),
    "server": ("users:activity!user", "access:servers!server"),
    "token": ("inherit",),
}


class ScopeError(ValueError):
    """An unknown scope name or malformed filter."""


@dataclass(frozen=True)
class Resource:
    """What a request touches, for filtered-scope checks."""

    user: str | None = None
    server: str | None = None  # "user/servername"
    group: str | None = None
    user_groups: frozenset[str] = frozenset()


def split(scope: str) -> tuple[str, str | None]:
    """``"read:users!user=bob"`` → ``("read:users", "user=bob")``."""
    base, _, flt = scope.partition("!")
    return base, (flt or None)


def validate(scope: str) -> None:
    """Raise :class:`ScopeError` for anything not a known scope with a well-formed filter."""
    base, flt = split(scope)
    if base not in SCOPE_TREE and base not in ("self", "inherit"):
        raise ScopeError(f"unknown scope {scope!r}")
    if flt is None or flt in ("user", "server"):
        return
    kind, _, value = flt.partition("=")
    if kind not in ("user", "server", "group") or not value:
        raise ScopeError(f"malformed scope filter in {scope!r}")
    if kind == "server" and "/" not in value:
        raise ScopeError(f"server filter must be user/server in {scope!r}")


def _descendants(base: str) -> set[str]:
    out = {base}
    for child in SCOPE_TREE.get(base, ()):
        out |= _descendants(child)
    return out


def expand(scopes: Iterable[str], owner: str | None = None, server: str | None = None) -> set[str]:
    """Expand roles' scopes into the full set they imply, resolving ``self``, ``!user``
    and ``!server`` for ``owner`` (and ``server``, its ``user/name`` key)."""
    out: set[str] = set()
    for scope in scopes:
        base, flt = split(scope)
        if base == "self":
            if owner is not None:
                out |= expand((f"{s}!user={owner}" for s in SELF_SCOPES), owner)
            continue
        if base == "inherit":
            out.add("inherit")
            continue
        if flt == "user":
            if owner is None:
                continue
            flt = f"user={owner}"
        elif flt == "server":
            if server is None:
                continue
            flt = f"server={server}"
        suffix = f"!{flt}" if flt else ""
        out |= {d + suffix for d in _descendants(base)}
    return out


def _filter_covers(granted: str | None, res: Resource) -> bool:
    if granted is None:
        return True
    kind, _, value = granted.partition("=")
    if kind == "user":
        return res.user == value
    if kind == "server":
        return res.server == value
    if kind == "group":
        return res.group == value or value in res.user_groups
    return False


def allows(granted: set[str], needed: str, res: Resource | None = None) -> bool:
    """Whether the expanded ``granted`` set allows ``needed`` on ``res``.

    With ``res`` None only an unfiltered grant counts (a filtered scope never authorizes a
    request without a matching resource, e.g. creating users in bulk).
    """
    if needed in granted:
        return True
    if res is None:
        return False
    prefix = needed + "!"
    return any(g.startswith(prefix) and _filter_covers(g[len(prefix):], res) for g in granted)


def allows_any(granted: set[str], needed: str) -> bool:
    """Whether ``needed`` is held for at least one resource (to list what may be filtered)."""
    return needed in granted or any(g.startswith(needed + "!") for g in granted)


def _covered(scope: str, owner_scopes: set[str]) -> bool:
    if scope in owner_scopes:
        return True
    base, flt = split(scope)
    if base in owner_scopes:
        return True
    if flt and flt.startswith("server="):
        user = flt[len("server="):].split("/", 1)[0]
        return f"{base}!user={user}" in owner_scopes
    return False


def intersect(token_scopes: set[str], owner_scopes: set[str]) -> set[str]:
    """The token's expanded scopes limited to what its owner holds (``inherit`` → owner's)."""
    if "inherit" in token_scopes:
        return set(owner_scopes)
    return {s for s in token_scopes if _covered(s, owner_scopes)}


def role_scopes(role_names: Iterable[str], custom: dict[str, list[str]]) -> list[str]:
    """Raw (unexpanded) scopes of built-in and custom roles (``custom`` may also adjust a
    built-in one to the settings: see :func:`builtin_overrides`)."""
    out: list[str] = []
    for name in role_names:
        if name in custom:
            out.extend(custom[name])
        else:
            out.extend(BUILTIN_ROLES.get(name, ()))
    return out


def builtin_overrides(admin_access: bool) -> dict[str, list[str]]:
    """Built-in roles as the settings shape them: without ``admin_access`` the ``admin`` role
    does not reach users' servers (JupyterHub's rule), whether by OAuth or by API token."""
    if admin_access:
        return {}
    # An admin's own servers stay theirs (JupyterHub's admins hold the user role too).
    return {"admin": [s if s != "access:servers" else "access:servers!user"
                      for s in BUILTIN_ROLES["admin"]]}
