"""Authenticators: who may log in.

Contract: :meth:`Authenticator.authenticate` receives a normalized username and the password
typed in, and returns the canonical username on success or ``None`` on failure. It never says
which of the two was wrong. Implementations must be safe to call concurrently and must not
block the event loop (slow work goes to a thread).

Built in: ``native`` (bcrypt hashes in the hub database, the default), ``pam`` (system
accounts via ``pamela``) and ``dummy`` (development only: any password, or one shared password).
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

import bcrypt
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.db.models import User
from hub.services import plugins

log = logging.getLogger(__name__)
# A real hash to compare against when the user is unknown, so timing doesn't reveal it.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds=10))


def hash_password(password: str) -> str:
    """bcrypt hash of a password (UTF-8; bcrypt's 72-byte limit is enforced by callers)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()


def check_password(password: str, hashed: str | None) -> bool:
    candidate = hashed.encode() if hashed else _DUMMY_HASH
    try:
        ok = bcrypt.checkpw(password.encode("utf-8", "surrogatepass"), candidate)
    except ValueError:
        return False
    return ok and hashed is not None


def validate_password(password: str) -> None:
    """Raise ValueError for a password the native authenticator won't store."""
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    if len(password.encode()) > 72:
        raise ValueError("password must be at most 72 bytes")


class Authenticator:
    """Base class. Subclasses set ``name`` and implement :meth:`authenticate`."""

    name: ClassVar[str] = "base"
    #: Whether the hub stores passwords itself (enables ``himalia users passwd``).
    manages_passwords: ClassVar[bool] = False

    def __init__(self, db: sessionmaker[Session]) -> None:
        self.db = db

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.authenticate is Authenticator.authenticate:
            raise TypeError(f"{cls.__name__} must implement authenticate()")

    async def authenticate(self, username: str, password: str) -> str | None:
        raise NotImplementedError


class NativeAuthenticator(Authenticator):
    """Accounts whose bcrypt password hash lives in the hub database."""

    name = "native"
    manages_passwords = True

    async def authenticate(self, username: str, password: str) -> str | None:
        with self.db() as session:
            hashed = session.scalar(select(User.password_hash).where(User.name == username))
        ok = await asyncio.get_running_loop().run_in_executor(
            None, check_password, password, hashed
        )
        return username if ok else None


class DummyAuthenticator(Authenticator):
    """Development only: any existing-or-new username logs in with any non-empty password."""

    name = "dummy"

    async def authenticate(self, username: str, password: str) -> str | None:
        return username if password else None


class PAMAuthenticator(Authenticator):
    """System accounts, checked through PAM (``pamela``) in a worker thread."""

    name = "pam"
    service = "login"

    async def authenticate(self, username: str, password: str) -> str | None:
        import pamela

        def check() -> bool:
            try:
                pamela.authenticate(username, password, service=self.service)
            except pamela.PAMError:
                return False
            return True

        ok = await asyncio.get_running_loop().run_in_executor(None, check)
        return username if ok else None


BUILTIN: dict[str, type[Authenticator]] = {
    "native": NativeAuthenticator,
    "dummy": DummyAuthenticator,
    "pam": PAMAuthenticator,
}


def load_class(spec: str) -> type[Authenticator]:
    """An authenticator class from a built-in name or a ``module:Class``/dotted path."""
    return plugins.load_class(spec, BUILTIN, Authenticator, "authenticator")
