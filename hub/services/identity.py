"""Who is calling: resolve an API token or a login session into an :class:`Identity`.

An identity carries the caller's *effective* expanded scopes: for a browser session, the
user's roles; for a token, the token's scopes limited to its owner's (a token never exceeds
its owner, and a revoked or expired token resolves to nothing). A configured external service's
token (``kind='service'``, no user) resolves to the service itself, with the scopes its roles
gave it at start-up (see :mod:`hub.services.rbac`); ``Identity.service`` then names it.

Resolved identities are cached per token (or login session) for :data:`IDENTITY_TTL` seconds,
so a script hammering the API costs one hash and one dictionary lookup per request. What this
hub process changes drops cached identities at once: revoking a token (:func:`tokens.forget`),
logging out, deleting a user, session or token, and changing a user's name, admin flag, roles
or groups, a group's members or roles, or a role's scopes (SQLAlchemy attribute events, also
after the commit). Changes made by another process — the ``himalia`` CLI — are seen on the
next request with SQLite (any commit by another connection empties the caches, see
:class:`hub.db.database.ChangeDetector`), and within :data:`IDENTITY_TTL` seconds with
PostgreSQL. An expiring token or session is never served past its expiry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, selectinload, sessionmaker

from hub.db.database import changed_elsewhere
from hub.db.models import APIToken, Group, LoginSession, Role, User, utcnow
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

    def on_user(self, name: str, groups: frozenset[str] = frozenset()) -> sc.Resource:
        return sc.Resource(user=name, user_groups=groups)


def user_scopes(user: User, custom_roles: dict[str, list[str]]) -> set[str]:
    """Every scope the user's roles (direct and through groups) grant, expanded.

    A role's scopes come from its database row, else from the built-in or configured roles.
    """
    raw = sc.role_scopes(["admin" if user.admin else "user"], custom_roles)
    for role in [*user.roles, *(r for g in user.groups for r in g.roles)]:
        raw.extend(role.scopes or sc.role_scopes([role.name], custom_roles))
    return sc.expand(raw, owner=user.name)


# --- the identity cache -------------------------------------------------------------------
# key ("t:" + token hash or "s:" + session hash) → (monotonic deadline, custom roles, identity)
_identities: OrderedDict[str, tuple[float, object, Identity]] = OrderedDict()


def _token_key(hashed: str) -> str:
    return "t:" + hashed


def _session_key(hashed: str) -> str:
    return "s:" + hashed


def _cached(key: str, custom_roles: dict[str, list[str]]) -> Identity | None:
    hit = _identities.get(key)
    if hit is None:
        return None
    deadline, roles, found = hit
    if time.monotonic() >= deadline or roles is not custom_roles:
        _identities.pop(key, None)
        return None
    return found


def _remember(key: str, found: Identity, custom_roles: dict[str, list[str]],
              expires_at: datetime | None) -> Identity:
    ttl = IDENTITY_TTL
    if expires_at is not None:  # never past the token's or session's own expiry
        ttl = min(ttl, (expires_at - utcnow()).total_seconds())
    if ttl > 0:
        _identities[key] = (time.monotonic() + ttl, custom_roles, found)
        _identities.move_to_end(key)
        while len(_identities) > IDENTITY_CACHE_SIZE:
            _identities.popitem(last=False)
    return found


def forget_all() -> None:
    """Drop every cached identity (after a change to users, groups or roles)."""
    _identities.clear()


def _forget_token(hashed: str | None) -> None:
    if hashed is None:
        forget_all()
    else:
        _identities.pop(_token_key(hashed), None)


tokens.on_forget(_forget_token)


def _check_elsewhere(db: sessionmaker[Session]) -> None:
    """Forget everything cached when another connection (e.g. the CLI) committed since."""
    if changed_elsewhere(db):
        tokens.forget()  # the token cache, and through its hook every identity


def cached_token(db: sessionmaker[Session], secret: str,
                 custom_roles: dict[str, list[str]]) -> Identity | None:
    """The identity of a token resolved less than :data:`IDENTITY_TTL` ago, without a
    query (just a look at whether the database changed); None when it must be resolved
    with :func:`from_token`."""
    _check_elsewhere(db)
    return _cached(_token_key(tokens.hash_token(secret)), custom_roles)


def cached_session(db: sessionmaker[Session], key: str,
                   custom_roles: dict[str, list[str]]) -> Identity | None:
    """Like :func:`cached_token`, for a login session's key."""
    _check_elsewhere(db)
    return _cached(_session_key(tokens.hash_token(key)), custom_roles)


def _changed(target: Any, *_: Any) -> None:
    """A stored user, group or role changed in a way that may change someone's identity."""
    state = sa_inspect(target)
    if not state.has_identity:
        return  # a new row: nobody's cached identity depends on it yet
    forget_all()
    if state.session is not None:  # once more after the commit, in case a request ran between
        state.session.info["identities_changed"] = True


def _deleted(_mapper: Any, _conn: Any, target: Any) -> None:
    if isinstance(target, APIToken):
        tokens.forget(target.hashed)
    elif isinstance(target, LoginSession):
        _identities.pop(_session_key(target.hashed), None)
    else:
        _changed(target)


def _after_commit(session: Session) -> None:
    if session.info.pop("identities_changed", False):
        forget_all()


for _column in (User.name, User.admin, Group.name, Role.name, Role.scopes):
    event.listen(_column, "set", _changed)
for _collection in (User.roles, User.groups, Group.users, Group.roles):
    for _kind in ("append", "remove", "bulk_replace"):
        event.listen(_collection, _kind, _changed)
for _model in (User, Group, Role, APIToken, LoginSession):
    event.listen(_model, "after_delete", _deleted)
event.listen(Session, "after_commit", _after_commit)


# --- resolution ----------------------------------------------------------------------------
def _load_user(session: Session, user_id: int) -> User | None:
    """The user with what their scopes depend on: roles, groups and the groups' roles."""
    return session.scalar(
        select(User).where(User.id == user_id)
        .options(selectinload(User.roles), selectinload(User.groups).selectinload(Group.roles))
    )


def from_token(
    session: Session, secret: str, custom_roles: dict[str, list[str]]
) -> Identity | None:
    """Resolve a token (and remember the answer, see :func:`cached_token`)."""
    tok = tokens.lookup(session, secret)
    if tok is None:
        return None
    if tok.user_id is None:
        found = _service_identity(session, tok)
    else:
        found = _user_token_identity(session, tok, custom_roles)
    if found is None:
        return None
    return _remember(_token_key(tokens.hash_token(secret)), found, custom_roles, tok.expires_at)


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


def from_session(
    session: Session, key: str, custom_roles: dict[str, list[str]]
) -> Identity | None:
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
    return _remember(_session_key(hashed), found, custom_roles, row.expires_at)


def new_session(session: Session, user: User, max_age_days: float) -> str:
    """Create a login session; returns the secret key to put in the cookie."""
    key = tokens.new_secret()
    session.add(LoginSession(hashed=tokens.hash_token(key), user_id=user.id,
                             expires_at=utcnow() + timedelta(days=max_age_days)))
    session.flush()
    return key


def end_session(session: Session, key: str) -> None:
    """Log a browser out everywhere its session reached: the session and its OAuth tokens."""
    hashed_key = tokens.hash_token(key)
    _identities.pop(_session_key(hashed_key), None)
    row = session.scalar(select(LoginSession).where(LoginSession.hashed == hashed_key))
    if row is None:
        return
    for hashed in session.scalars(select(APIToken.hashed).where(APIToken.session_id == row.id)):
        tokens.forget(hashed)
    session.query(APIToken).filter(APIToken.session_id == row.id).delete()
    session.delete(row)
