"""Who is calling: resolve an API token or a login session into an :class:`Identity`.

An identity carries the caller's *effective* expanded scopes: for a browser session, the
user's roles; for a token, the token's scopes limited to its owner's (a token never exceeds
its owner, and a revoked or expired token resolves to nothing). A configured external service's
token (``kind='service'``, no user) resolves to the service itself, with the scopes its roles
gave it at start-up (see :mod:`hub.services.rbac`); ``Identity.service`` then names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from hub.db.models import LoginSession, User, utcnow
from hub.services import scopes as sc
from hub.services import tokens

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
        return sc.allows(set(self.scopes), needed, res)

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


def _load_user(session: Session, user_id: int) -> User | None:
    return session.scalar(
        select(User).where(User.id == user_id)
        .options(selectinload(User.roles), selectinload(User.groups))
    )


def from_token(
    session: Session, secret: str, custom_roles: dict[str, list[str]]
) -> Identity | None:
    tok = tokens.lookup(session, secret)
    if tok is None:
        return None
    if tok.user_id is None:
        return _service_identity(session, tok)
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
    row = session.scalar(select(LoginSession).where(LoginSession.hashed == tokens.hash_token(key)))
    if row is None or row.expires_at <= utcnow():
        return None
    user = _load_user(session, row.user_id)
    if user is None:
        return None
    return Identity(
        user_id=user.id, name=user.name, admin=user.admin,
        scopes=frozenset(user_scopes(user, custom_roles)), kind="cookie",
        session_id=row.id, groups=frozenset(g.name for g in user.groups),
    )


def new_session(session: Session, user: User, max_age_days: float) -> str:
    """Create a login session; returns the secret key to put in the cookie."""
    key = tokens.new_secret()
    session.add(LoginSession(hashed=tokens.hash_token(key), user_id=user.id,
                             expires_at=utcnow() + timedelta(days=max_age_days)))
    session.flush()
    return key


def end_session(session: Session, key: str) -> None:
    """Log a browser out everywhere its session reached: the session and its OAuth tokens."""
    row = session.scalar(select(LoginSession).where(LoginSession.hashed == tokens.hash_token(key)))
    if row is None:
        return
    from hub.db.models import APIToken

    for hashed in session.scalars(select(APIToken.hashed).where(APIToken.session_id == row.id)):
        tokens.forget(hashed)
    session.query(APIToken).filter(APIToken.session_id == row.id).delete()
    session.delete(row)
