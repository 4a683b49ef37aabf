"""Authenticators: who may log in.

Contract: :meth:`Authenticator.authenticate` receives a normalized username and the password
typed in, and returns the canonical username on success or ``None`` on failure. It never says
which of the two was wrong. Implementations must be safe to call concurrently and must not
block the event loop (slow work goes to a thread).

It may instead return an :class:`AuthResult`, which also carries the groups the identity
provider reports (for ``allowed_groups``/``admin_groups``/``manage_groups``, see
:mod:`hub.services.access`) and the ``auth_state`` to keep (encrypted, see
:mod:`hub.services.auth_state`). It raises :class:`AuthUnavailable` when the identity provider
cannot be reached, so the user sees "sign-in is unavailable" rather than "wrong password".

Authenticators whose users sign in elsewhere (``uses_password = False``) send the browser away
from the login page: :attr:`Authenticator.login_service` names the button, and the flow lives in
their own handlers (OpenID Connect: :mod:`hub.handlers.oidc_login`).

Built in: ``native`` (bcrypt hashes in the hub database, the default), ``pam`` (system
accounts via ``pamela``), ``dummy`` (development only: any password, or one shared password),
``oidc`` (:mod:`hub.services.oidc`) and ``ldap`` (:mod:`hub.services.ldap_auth`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import bcrypt
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config
from hub.db.models import User
from hub.services import auth_state, plugins

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


class AuthUnavailable(RuntimeError):
    """The identity provider cannot be reached (or answers nonsense): sign-in is unavailable.
    The message is for the log only."""


@dataclass
class AuthResult:
    """A successful sign-in. ``groups`` is None when the authenticator knows no groups (then
    group rules and ``manage_groups`` leave the user alone); ``auth_state`` is what the
    provider returned (tokens, claims), stored encrypted when a key is configured."""

    name: str
    groups: list[str] | None = None
    auth_state: dict[str, Any] | None = None
    #: Extra facts for the log (never secrets).
    info: dict[str, str] = field(default_factory=dict)


class Authenticator:
    """Base class. Subclasses set ``name`` and implement :meth:`authenticate`."""

    name: ClassVar[str] = "base"
    #: Whether the hub stores passwords itself (enables ``himalia users passwd``).
    manages_passwords: ClassVar[bool] = False
    #: Whether the login page shows the username/password form.
    uses_password: ClassVar[bool] = True

    #: Whether :meth:`authenticate` returns auth_state worth keeping (the hub then says at
    #: start-up when no auth_state key is configured).
    keeps_auth_state: ClassVar[bool] = False

    def __init__(self, db: sessionmaker[Session], config: Config | None = None) -> None:
        """ValueError (a ConfigError) for settings the authenticator cannot work with."""
        self.db = db
        self.config = config if config is not None else Config()
        self.auth_state = auth_state.from_config(self.config)
        if self.keeps_auth_state and not self.auth_state.enabled:
            log.info("auth_state is off (no auth_state_key or auth_state_key_file): "
                     "login tokens are not kept for spawners")

    @property
    def login_service(self) -> str:
        """Name on a "Sign in with <name>" button ("" for none: the password form only)."""
        return ""

    def logout_url(self, auth_state: dict[str, Any] | None, hub_login_url: str) -> str | None:
        """Where the browser goes after the hub session ended (None: the hub's login page)."""
        return None

    async def refresh_auth_state(self, auth_state: dict[str, Any]) -> dict[str, Any] | None:
        """Before a spawn: ``auth_state`` renewed if it has expired (None: keep it as is)."""
        return None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.authenticate is Authenticator.authenticate:
            raise TypeError(f"{cls.__name__} must implement authenticate()")

    async def authenticate(self, username: str, password: str) -> str | AuthResult | None:
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


#: Built in too, in modules of their own (imported only when chosen: they need more libraries).
BUILTIN_PATHS: dict[str, str] = {
    "oidc": "hub.services.oidc.OIDCAuthenticator",
    "ldap": "hub.services.ldap_auth.LDAPAuthenticator",
}


def load_class(spec: str) -> type[Authenticator]:
    """An authenticator class from a built-in name or a ``module:Class``/dotted path."""
    return plugins.load_class(BUILTIN_PATHS.get(spec, spec), BUILTIN, Authenticator,
                              "authenticator", also=BUILTIN_PATHS)
