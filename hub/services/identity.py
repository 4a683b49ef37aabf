"""Who is calling: resolve an API token or a login session into an :class:`Identity`.

An identity carries the caller's *effective* expanded scopes: for a browser session, the
user's roles; for a token, the token's scopes limited to its owner's (a token never exceeds
its owner, and a revoked or expired token resolves to nothing). A configured external service's
token (``kind='service'``, no user) resolves to the service itself, with the scopes its roles
gave it at start-up (see :mod:`hub.services.rbac`); ``Identity.service`` then names it.

Resolved identities are cached per token (or login session) for :data:`IDENTITY_TTL` seconds
by the hub's :class:`IdentityCache`, so a script hammering the API costs one hash and one
dictionary lookup per request. What this hub process changes drops cached identities at once:
revoking or deleting a token, logging out, deleting a user, group, role, server or session, and
changing a user's name, admin flag, roles or groups, a group's name, members or roles, or a
role's scopes (events of the hub's sessions, at the flush and again after the commit). Changes
made by another process — the ``himalia`` CLI — are seen on the
next request with SQLite (any commit by another connection empties the caches, see
:class:`hub.db.database.ChangeDetector`), and within :data:`IDENTITY_TTL` seconds with
PostgreSQL. An expiring token or session is never served past its expiry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from cachetools import TLRUCache
from sqlalchemy import delete, event, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import ORMExecuteState, Session, selectinload, sessionmaker

from hub.db.database import changed_elsewhere
from hub.db.models import APIToken, Group, LoginSession, Role, Server, User, utcnow
from hub.services import scopes as sc
from hub.services import tokens

#: Seconds a resolved identity is reused (see the module docstring for what drops it sooner).
IDENTITY_TTL = 2.0
IDENTITY_CACHE_SIZE = 10_000

#: Holding all of these makes a service an admin (users are admins by their flag).
ADMIN_SCOPES = frozenset(sc.expand(sc.BUILTIN_ROLES["admin"]))


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: a user (possibly through a token) or an external service.

    For a service, ``service`` and ``name`` are its name and ``user_id`` is 0 (no user row).
    """

    user_id: int
    name: str
    admin: bool
    scopes: frozenset[str]
    kind: str  # "cookie" or "token"
    token_id: str | None = None
    session_id: int | None = None
    groups: frozenset[str] = frozenset()
    service: str | None = None

    def can(self, needed: str, res: sc.Resource | None = None) -> bool:
        if needed in self.scopes:  # the common case, without copying the scope set
            return True
        return res is not None and sc.allows(set(self.scopes), needed, res)


def user_scopes(user: User, custom_roles: dict[str, list[str]]) -> set[str]:
    """Every scope the user's roles (direct and through groups) grant, expanded.

    A role's scopes come from its database row, else from the built-in or configured roles.
    """
    raw = sc.role_scopes(["admin" if user.admin else "user"], custom_roles)
    for role in [*user.roles, *(r for g in user.groups for r in g.roles)]:
        raw.extend(role.scopes or sc.role_scopes([role.name], custom_roles))
    return sc.expand(raw, owner=user.name)


# --- the identity cache -------------------------------------------------------------------
class _Entry(NamedTuple):
    deadline: float  # time.monotonic() after which the entry is gone
    roles: object  # the custom-role table it was resolved with
    identity: Identity


#: What makes a stored row's change matter to someone's identity (a new row matters to nobody
#: yet; deleting one of these forgets everything, see :meth:`IdentityCache._after_flush`).
_WATCHED: dict[type, tuple[str, ...]] = {
    User: ("name", "admin", "roles", "groups"),
    Group: ("name", "users", "roles"),
    Role: ("name", "scopes"),
}
#: The columns of a token its identity depends on (``last_activity`` is not one).
_TOKEN_FIELDS = ("scopes", "expires_at", "user_id", "kind", "service_name", "session_id")
#: Rows whose deletion may take tokens or sessions with it (database-level cascades).
_CASCADING = (User, Group, Role, Server, LoginSession)
_ALL = "*"


class IdentityCache:
    """The hub's resolved identities and token lookups, kept honest by its own session events.

    One per hub (:class:`hub.context.HubContext` ``identities``), bound to the hub's
    ``sessionmaker``: every session it makes reports flushed changes to token, session, user,
    group and role rows, and bulk ``DELETE``/``UPDATE`` statements on them, and the affected
    entries are dropped at once and again after the commit (see the module docstring).
    Identities are keyed ``t:<token hash>`` or ``s:<session hash>``.
    """

    def __init__(self, db: sessionmaker[Session], ttl: float = IDENTITY_TTL,
                 size: int = IDENTITY_CACHE_SIZE) -> None:
        self.db = db
        self.ttl = ttl
        self.tokens = tokens.TokenCache()
        self._entries: TLRUCache[str, _Entry] = TLRUCache(
            size, ttu=lambda _key, entry, _now: entry.deadline, timer=time.monotonic)
        event.listen(db, "after_flush", self._after_flush)
        event.listen(db, "do_orm_execute", self._on_execute)
        event.listen(db, "after_commit", self._after_commit)

    # --- lookups ---------------------------------------------------------------------------
    def cached_token(self, secret: str, custom_roles: dict[str, list[str]]) -> Identity | None:
        """The identity of a token resolved less than ``ttl`` seconds ago, without a query
        (just a look at whether the database changed); None when it must be resolved with
        :meth:`from_token`."""
        self._check_elsewhere()
        return self._cached("t:" + tokens.hash_token(secret), custom_roles)

    def cached_session(self, key: str, custom_roles: dict[str, list[str]]) -> Identity | None:
        """Like :meth:`cached_token`, for a login session's key."""
        self._check_elsewhere()
        return self._cached("s:" + tokens.hash_token(key), custom_roles)

    def from_token(self, session: Session, secret: str,
                   custom_roles: dict[str, list[str]]) -> Identity | None:
        """Resolve a token (and remember the answer, see :meth:`cached_token`)."""
        tok = self.tokens.lookup(session, secret)
        if tok is None:
            return None
        if tok.user_id is None:
            found = _service_identity(session, tok)
        else:
            found = _user_token_identity(session, tok, custom_roles)
        if found is None:
            return None
        return self._remember("t:" + tokens.hash_token(secret), found, custom_roles,
                              tok.expires_at)

    def from_session(self, session: Session, key: str,
                     custom_roles: dict[str, list[str]]) -> Identity | None:
        """Resolve a login session's key (and remember the answer)."""
        hashed = tokens.hash_token(key)
        row = session.scalar(select(LoginSession).where(LoginSession.hashed == hashed))
        if row is None or row.expires_at <= utcnow():
            return None
        user = _load_user(session, row.user_id)
        if user is None:
            return None
        found = Identity(
            user_id=user.id, name=user.name, admin=user.admin,
            scopes=frozenset(user_scopes(user, custom_roles)), kind="cookie",
            session_id=row.id, groups=frozenset(g.name for g in user.groups),
        )
        return self._remember("s:" + hashed, found, custom_roles, row.expires_at)

    # --- forgetting ------------------------------------------------------------------------
    def forget_all(self) -> None:
        """Drop every cached identity and token."""
        self._entries.clear()
        self.tokens.forget()

    def forget_token(self, hashed: str) -> None:
        self.tokens.forget(hashed)
        self._entries.pop("t:" + hashed, None)

    def _cached(self, key: str, custom_roles: dict[str, list[str]]) -> Identity | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit.roles is not custom_roles:
            self._entries.pop(key, None)
            return None
        return hit.identity

    def _remember(self, key: str, found: Identity, custom_roles: dict[str, list[str]],
                  expires_at: datetime | None) -> Identity:
        ttl = self.ttl
        if expires_at is not None:  # never past the token's or session's own expiry
            ttl = min(ttl, (expires_at - utcnow()).total_seconds())
        if ttl > 0:
            self._entries[key] = _Entry(time.monotonic() + ttl, custom_roles, found)
        return found

    def _check_elsewhere(self) -> None:
        """Forget everything cached when another connection (e.g. the CLI) committed since."""
        if changed_elsewhere(self.db):
            self.forget_all()

    def _forget(self, session: Session, keys: set[str]) -> None:
        """Drop ``keys`` now and after the commit, in case a request resolved them in between:
        a token's hash (its lookup and identity), ``l:<hash>`` (its lookup only), ``s:<hash>``
        (a login session's identity) or :data:`_ALL`."""
        for key in keys:
            self._drop(key)
        session.info.setdefault("identity_forget", set()).update(keys)

    def _drop(self, key: str) -> None:
        if key == _ALL:
            self.forget_all()
        elif key.startswith("s:"):
            self._entries.pop(key, None)
        elif key.startswith("l:"):
            self.tokens.forget(key[2:])
        else:
            self.forget_token(key)

    # --- session events --------------------------------------------------------------------
    def _after_flush(self, session: Session, _context: Any) -> None:
        keys: set[str] = set()
        for obj in session.deleted:
            if isinstance(obj, APIToken):
                keys.add(obj.hashed)
            if isinstance(obj, _CASCADING):
                keys.add(_ALL)
        for obj in session.dirty:
            if isinstance(obj, APIToken):
                # Recording use (touch) changes no identity: only the looked-up row is stale.
                used_only = not _changed(obj, _TOKEN_FIELDS)
                keys.add(("l:" if used_only else "") + obj.hashed)
            watched = _WATCHED.get(type(obj))
            if watched and _changed(obj, watched):
                keys.add(_ALL)
        if keys:
            self._forget(session, keys)

    def _on_execute(self, state: ORMExecuteState) -> None:
        """A bulk ``DELETE``/``UPDATE`` names no rows: forget everything when it hits ours."""
        if not (state.is_delete or state.is_update):
            return
        mapper = state.bind_mapper
        if mapper is not None and issubclass(mapper.class_, (APIToken, *_CASCADING)):
            self._forget(state.session, {_ALL})

    def _after_commit(self, session: Session) -> None:
        for key in session.info.pop("identity_forget", ()):
            self._drop(key)


def _changed(obj: Any, attrs: tuple[str, ...]) -> bool:
    state = sa_inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in attrs)


# --- resolution ----------------------------------------------------------------------------
def _load_user(session: Session, user_id: int) -> User | None:
    """The user with what their scopes depend on: roles, groups and the groups' roles."""
    return session.scalar(
        select(User).where(User.id == user_id)
        .options(selectinload(User.roles), selectinload(User.groups).selectinload(Group.roles))
    )


def _user_token_identity(session: Session, tok: tokens.CachedToken,
                         custom_roles: dict[str, list[str]]) -> Identity | None:
    assert tok.user_id is not None
    user = _load_user(session, tok.user_id)
    if user is None:
        return None
    owner = user_scopes(user, custom_roles)
    granted = sc.intersect(sc.expand(tok.scopes, owner=user.name), owner)
    tokens.touch(session, tok)
    return Identity(
        user_id=user.id, name=user.name, admin=user.admin, scopes=frozenset(granted),
        kind="token", token_id=("o" if tok.kind == "oauth" else "a") + str(tok.id),
        session_id=tok.session_id, groups=frozenset(g.name for g in user.groups),
    )


def _service_identity(session: Session, tok: tokens.CachedToken) -> Identity | None:
    """A service's token: the scopes stored with it at start-up (services have no owner)."""
    if tok.kind != "service" or not tok.service_name:
        return None
    granted = sc.expand(tok.scopes)
    tokens.touch(session, tok)
    return Identity(
        user_id=0, name=tok.service_name, admin=ADMIN_SCOPES <= granted,
        scopes=frozenset(granted), kind="token", token_id="a" + str(tok.id),
        service=tok.service_name,
    )


def new_session(session: Session, user: User, max_age_days: float) -> str:
    """Create a login session; returns the secret key to put in the cookie."""
    key = tokens.new_secret()
    session.add(LoginSession(hashed=tokens.hash_token(key), user_id=user.id,
                             expires_at=utcnow() + timedelta(days=max_age_days)))
    session.flush()
    return key


def end_session(session: Session, key: str) -> None:
    """Log a browser out everywhere its session reached: the session and its OAuth tokens.

    The hub's :class:`IdentityCache` sees both deletions and forgets them.
    """
    row = session.scalar(select(LoginSession).where(LoginSession.hashed == tokens.hash_token(key)))
    if row is None:
        return
    session.execute(delete(APIToken).where(APIToken.session_id == row.id))
    session.delete(row)
