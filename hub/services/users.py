"""User accounts: creation, lookup, admin flag, passwords, deletion, and the user model.

Handlers and the CLI both call these functions inside a :func:`hub.db.database.transaction`.
Errors are :class:`UserError` subclasses whose message is safe to show to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from hub.db.models import User, isoformat
from hub.services import auth, names


class UserError(ValueError):
    """A user operation failed; ``status`` is the HTTP status an API should answer."""

    status = 400


#: Raises ``ValueError`` (safe to show) for a name the hub's account policy cannot use; see
#: :meth:`hub.services.accounts.AccountPolicy.check_name`.
NameCheck = Callable[[str], None]


def _clean(raw: str, check: NameCheck | None) -> str:
    try:
        clean = names.clean_username(raw)
        if check is not None:
            check(clean)
    except ValueError as e:
        raise UserError(str(e)) from None
    return clean


class UserExists(UserError):
    status = 409


class NoSuchUser(UserError):
    status = 404


def get(session: Session, name: str) -> User | None:
    """The user called ``name`` (normalized), or None."""
    return session.scalar(
        select(User)
        .where(User.name == names.normalize_username(name))
        .options(selectinload(User.servers), selectinload(User.groups),
                 selectinload(User.roles))
    )


def require(session: Session, name: str) -> User:
    user = get(session, name)
    if user is None:
        raise NoSuchUser(f"no such user: {name}")
    return user


def create(session: Session, name: str, admin: bool = False, password: str | None = None,
           check: NameCheck | None = None) -> User:
    """Create one user; raises :class:`UserExists` or :class:`UserError` for a bad name."""
    clean = _clean(name, check)
    if session.scalar(select(User.id).where(User.name == clean)) is not None:
        raise UserExists(f"user {clean} already exists")
    user = User(name=clean, admin=admin)
    if password is not None:
        set_password(user, password)
    session.add(user)
    session.flush()
    return user


def create_many(session: Session, raw_names: Iterable[str], admin: bool = False,
                check: NameCheck | None = None) -> list[User]:
    """Create several users at once; all or nothing."""
    cleaned: list[str] = []
    for raw in raw_names:
        try:
            cleaned.append(_clean(raw, check))
        except UserError as e:
            raise UserError(f"{e}: {raw[:64]!r}") from None
    if len(set(cleaned)) != len(cleaned):
        raise UserError("duplicate usernames in request")
    existing = session.scalars(select(User.name).where(User.name.in_(cleaned))).all()
    if existing:
        raise UserExists(f"users already exist: {', '.join(sorted(existing)[:20])}")
    users = [User(name=n, admin=admin) for n in cleaned]
    session.add_all(users)
    session.flush()
    return users


def set_password(user: User, password: str) -> None:
    try:
        auth.validate_password(password)
    except ValueError as e:
        raise UserError(str(e)) from None
    user.password_hash = auth.hash_password(password)


def delete(session: Session, user: User) -> None:
    """Delete a user with their tokens, sessions and server rows (servers must be stopped)."""
    session.delete(user)
    session.flush()


def rename(session: Session, user: User, new_name: str, check: NameCheck | None = None) -> None:
    clean = _clean(new_name, check)
    if clean != user.name and session.scalar(select(User.id).where(User.name == clean)):
        raise UserExists(f"user {clean} already exists")
    user.name = clean


def modify(session: Session, user: User, name: str | None = None,
           admin: bool | None = None, check: NameCheck | None = None) -> None:
    """Rename a user and/or set their admin flag (who may do so is the caller's check).

    A user with running servers cannot be renamed: their URLs and tokens carry the name.
    """
    if name is not None and name != user.name:
        if any(s.started is not None for s in user.servers):
            raise UserError("Cannot rename a user with running servers")
        rename(session, user, name, check)
    if admin is not None:
        user.admin = admin
    session.flush()


def check_named_server_limit(user: User, server_name: str, limit: int) -> None:
    """:class:`UserError` when starting ``server_name`` would create one named server more
    than ``limit`` (0: no limit). Stopped named servers count until removed."""
    existing = {s.name for s in user.servers if s.name}
    if not server_name or limit <= 0 or server_name in existing:
        return
    if len(existing) >= limit:
        raise UserError(f"User {user.name} already has the maximum of {limit} named servers; "
                        "one must be deleted before a new server can be created")


def record_activity(user: User, servers: Mapping[str, datetime],
                    last_activity: datetime | None = None) -> None:
    """Move the user's and their servers' ``last_activity`` forward (never back).

    ``servers`` maps server names to times; an unknown name is a :class:`UserError`.
    """
    by_name = {s.name: s for s in user.servers}
    unknown = [n for n in servers if n not in by_name]
    if unknown:
        raise UserError(f"No such server: {unknown[0][:64]}")
    for server_name, stamp in servers.items():
        server = by_name[server_name]
        if server.last_activity is None or stamp > server.last_activity:
            server.last_activity = stamp
    stamps = [*servers.values(), *([last_activity] if last_activity else [])]
    latest = max(stamps, default=None)
    if latest is not None and (user.last_activity is None or latest > user.last_activity):
        user.last_activity = latest


def role_names(user: User) -> list[str]:
    out = ["admin"] if user.admin else ["user"]
    out.extend(r.name for r in user.roles if r.name not in out)
    for g in user.groups:
        out.extend(r.name for r in g.roles if r.name not in out)
    return out


def last_options(user: User, server: str) -> dict[str, Any] | None:
    """The options ``user`` last started ``server`` with — or, for a server never started
    with options, those of the user's most recently started server — to preselect them."""
    rows = sorted((s for s in user.servers if s.user_options),
                  key=lambda s: (s.name == server, s.last_activity or datetime.min),
                  reverse=True)
    return dict(rows[0].user_options) if rows else None


class ServerLike(Protocol):
    """A server row, or the same columns loaded without the ORM."""

    @property
    def name(self) -> str: ...
    @property
    def started(self) -> datetime | None: ...
    @property
    def last_activity(self) -> datetime | None: ...
    @property
    def user_options(self) -> dict[str, Any] | None: ...
    @property
    def state(self) -> dict[str, Any] | None: ...


def server_model(owner: str, server: ServerLike, base_url: str, pending: str | None,
                 ready: bool, include_state: bool = False) -> dict[str, Any]:
    """JupyterHub's server model of ``owner``'s ``server``."""
    from urllib.parse import quote

    from hub.services.server_names import server_prefix

    prefix = server_prefix(base_url, owner, server.name)
    progress = f"{base_url}hub/api/users/{quote(owner, safe='')}/"
    progress += f"servers/{quote(server.name, safe='')}/progress" if server.name \
        else "server/progress"
    model: dict[str, Any] = {
        "name": server.name,
        "ready": ready,
        "pending": pending,
        "stopped": server.started is None and pending is None,
        "url": prefix,
        "progress_url": progress,
        "started": isoformat(server.started),
        "last_activity": isoformat(server.last_activity),
        "user_options": server.user_options or {},
    }
    if include_state:
        model["state"] = server.state or {}
    return model
