"""SQLAlchemy 2 models of the hub's state.

Times are naive UTC datetimes (SQLite keeps no time zone); :func:`utcnow` makes them.
Secrets (API tokens, OAuth codes and client secrets, session ids) are stored only as SHA-256
hashes of high-entropy random values; passwords as bcrypt hashes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """The current time as a naive UTC datetime, as stored in the database."""
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat(dt: datetime | None) -> str | None:
    """Format a stored time as ISO 8601 with a ``Z`` suffix (JupyterHub's format)."""
    if dt is None:
        return None
    return dt.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class Base(DeclarativeBase):
    """Declarative base of every model."""

    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


user_groups = Table(
    "user_groups",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)
user_roles = Table(
    "user_roles",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)
group_roles = Table(
    "group_roles",
    Base.metadata,
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base):
    """A hub account. ``password_hash`` is set only for native (hub-managed) accounts."""

    __tablename__ = "users"
    # Ids are never reused, so a cached or leaked reference to a deleted row can't match a new one.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    #: What the identity provider returned at the last login, Fernet-encrypted
    #: (:mod:`hub.services.auth_state`); None when auth_state is off.
    encrypted_auth_state: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)

    servers: Mapped[list[Server]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    groups: Mapped[list[Group]] = relationship(secondary=user_groups, back_populates="users")
    roles: Mapped[list[Role]] = relationship(secondary=user_roles)


class Server(Base):
    """One of a user's servers (``name == ""`` is the default server).

    ``state`` is the spawner's own JSON state (e.g. pid and process start time), kept so a
    restarted hub can find a still-running server again. ``started`` is None when stopped.
    ``lifecycle`` is where the server is in its life (a :class:`hub.services.lifecycle.State`
    value); ``stop_reason`` (a short code) and ``stop_message`` (safe to show its owner) say why
    it failed or stopped by itself, until the next start.
    """

    __tablename__ = "servers"
    __table_args__ = (UniqueConstraint("user_id", "name"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    url: Mapped[str | None] = mapped_column(String(1024), default=None)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    user_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    lifecycle: Mapped[str] = mapped_column(String(16), default="stopped",
                                           server_default="stopped")
    stop_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    stop_message: Mapped[str | None] = mapped_column(Text, default=None)

    user: Mapped[User] = relationship(back_populates="servers")


class LoginSession(Base):
    """A browser login; deleting the row logs that browser out (cookie replay then fails)."""

    __tablename__ = "login_sessions"
    # Ids are never reused, so a cached or leaked reference to a deleted row can't match a new one.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    hashed: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class APIToken(Base):
    """An API token: issued by the API/CLI (``kind='api'``), to a server (``'server'``) or by
    OAuth (``'oauth'``, bound to a client and, for browser logins, to a login session)."""

    __tablename__ = "api_tokens"
    # Ids are never reused, so a cached or leaked reference to a deleted row can't match a new one.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    hashed: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16), default="api")
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, default=None
    )
    service_name: Mapped[str | None] = mapped_column(String(255), default=None)
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), default=None
    )
    client_id: Mapped[str | None] = mapped_column(String(255), default=None)
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("login_sessions.id", ondelete="CASCADE"), default=None
    )
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    last_activity: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    user: Mapped[User | None] = relationship()


class OAuthClient(Base):
    """An OAuth client (one per user server). The secret is the server's API token."""

    __tablename__ = "oauth_clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(1024))
    description: Mapped[str] = mapped_column(Text, default="")
    allowed_scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), default=None
    )


class OAuthCode(Base):
    """A single-use, short-lived authorization code (stored hashed)."""

    __tablename__ = "oauth_codes"
    id: Mapped[int] = mapped_column(primary_key=True)
    hashed: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    client_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("login_sessions.id", ondelete="CASCADE"), default=None
    )
    redirect_uri: Mapped[str] = mapped_column(String(1024))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    code_challenge: Mapped[str | None] = mapped_column(String(128), default=None)
    code_challenge_method: Mapped[str | None] = mapped_column(String(16), default=None)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Group(Base):
    """A named set of users, with free-form JSON properties."""

    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    users: Mapped[list[User]] = relationship(secondary=user_groups, back_populates="groups")
    roles: Mapped[list[Role]] = relationship(secondary=group_roles)


class Role(Base):
    """A named bundle of scopes, granted to users and groups."""

    __tablename__ = "roles"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
