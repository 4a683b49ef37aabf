"""auth_state: what an identity provider returned at login (tokens, claims), encrypted at rest.

The key comes from the ``auth_state_key`` setting (usually ``HIMALIA_AUTH_STATE_KEY``) or the
file named by ``auth_state_key_file`` (mode 0600, else the hub refuses to start): one or more
Fernet keys (``Fernet.generate_key()``; ``;``- or line-separated), the first encrypting, all
decrypting, so keys can be rotated. Without a key the feature is off: nothing is stored, spawners
get None, and the hub says so once at start-up.

Stored as ``users.encrypted_auth_state`` (Fernet token: AES-128-CBC + HMAC-SHA256); a value that
no configured key opens (a lost or rotated-away key) reads as None and is logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config, ConfigError
from hub.db.database import transaction
from hub.db.models import User

if TYPE_CHECKING:
    from hub.services.auth import Authenticator

log = logging.getLogger(__name__)


class AuthStateCrypt:
    """Encrypts and decrypts auth_state dicts; :attr:`enabled` is False without a key."""

    def __init__(self, keys: list[bytes]) -> None:
        self._fernet = MultiFernet([Fernet(k) for k in keys]) if keys else None

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def encrypt(self, state: dict[str, Any] | None) -> bytes | None:
        """The stored form of ``state`` (None when off or ``state`` is None)."""
        if self._fernet is None or state is None:
            return None
        return self._fernet.encrypt(json.dumps(state).encode())

    def decrypt(self, blob: bytes | None) -> dict[str, Any] | None:
        if self._fernet is None or not blob:
            return None
        try:
            value = json.loads(self._fernet.decrypt(bytes(blob)))
        except (InvalidToken, ValueError):
            log.warning("stored auth_state cannot be decrypted with the configured key(s)")
            return None
        return value if isinstance(value, dict) else None


def _split(text: str) -> list[str]:
    return [k.strip() for k in text.replace(";", "\n").splitlines() if k.strip()]


def from_config(config: Config) -> AuthStateCrypt:
    """The crypt for ``config``; ConfigError for a bad key or an exposed key file."""
    raw = _split(config.auth_state_key)
    if config.auth_state_key_file:
        path = Path(config.auth_state_key_file)
        try:
            mode = path.stat().st_mode
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"auth_state_key_file {path}: {e.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"auth_state_key_file {path} is readable by other users "
                              f"(mode {stat.filemode(mode)}); run `chmod 600 {path}`")
        raw += _split(text)
    keys: list[bytes] = []
    for key in raw:
        try:
            Fernet(key.encode())
        except ValueError:
            raise ConfigError("an auth_state key is not a Fernet key (32 url-safe base64-encoded "
                              "bytes, e.g. from Fernet.generate_key())") from None
        keys.append(key.encode())
    return AuthStateCrypt(keys)


def load(session: Session, crypt: AuthStateCrypt, username: str) -> dict[str, Any] | None:
    """The decrypted auth_state of ``username`` (None: none stored, off, or unreadable)."""
    if not crypt.enabled:
        return None
    blob = session.scalar(select(User.encrypted_auth_state).where(User.name == username))
    return crypt.decrypt(blob)


def save(session: Session, crypt: AuthStateCrypt, username: str,
         state: dict[str, Any] | None) -> None:
    """Store (or with None, forget) the auth_state of ``username``; nothing when off."""
    if not crypt.enabled:
        return
    user = session.scalar(select(User).where(User.name == username))
    if user is not None:
        user.encrypted_auth_state = crypt.encrypt(state)


async def for_spawn(db: sessionmaker[Session], authenticator: Authenticator,
                    username: str) -> dict[str, Any] | None:
    """The auth_state to hand ``username``'s spawner: renewed first when the authenticator
    says it has expired (stored again); on a failed renewal the stored one, with a warning."""
    crypt = authenticator.auth_state
    if not crypt.enabled:
        return None
    with db() as session:
        state = load(session, crypt, username)
    if state is None:
        return None
    try:
        new = await authenticator.refresh_auth_state(state)
    except Exception as e:  # a provider problem must not stop the spawn
        log.warning("auth_state of %s not refreshed: %s", username[:64], type(e).__name__)
        return state
    if new is None:
        return state
    with transaction(db) as session:
        save(session, crypt, username, new)
    log.info("auth_state of %s refreshed before a spawn", username[:64])
    return new
