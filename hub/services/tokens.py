"""API tokens: minting, hashing, lookup, and a bounded cache of lookups.

Tokens are 32 random bytes (URL-safe text); only their SHA-256 is stored, so a fast hash is
safe here (unlike passwords, a token has no dictionary to guess from). :func:`lookup` always
queries; a :class:`TokenCache` (one per hub, held by its identity cache) keeps successful
lookups for a short time keyed by that hash, and is told when a token row changes.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.db.models import APIToken, utcnow

CACHE_SIZE = 10_000
#: Seconds a looked-up token is reused. Revocations made in this process apply at once
#: (:meth:`TokenCache.forget`); one made by another process (the CLI) is seen within this time.
CACHE_TTL = 2.0
# Record last_activity at most this often per token, to keep writes off the hot path.
ACTIVITY_RESOLUTION = timedelta(seconds=60)


def hash_token(token: str) -> str:
    """The stored form of a token, OAuth code or session id."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A fresh high-entropy secret."""
    return secrets.token_urlsafe(32)


def public_id(token: APIToken) -> str:
    """JupyterHub-style token id: ``a`` + database id (``o`` for OAuth tokens)."""
    return ("o" if token.kind == "oauth" else "a") + str(token.id)


def parse_public_id(text: str) -> int | None:
    if len(text) > 1 and text[0] in "ao" and text[1:].isdigit():
        return int(text[1:])
    return None


@dataclass(frozen=True)
class CachedToken:
    """What a request needs from a token row, detached from any session."""

    id: int
    kind: str
    user_id: int | None
    service_name: str | None
    server_id: int | None
    session_id: int | None
    scopes: tuple[str, ...]
    expires_at: datetime | None
    last_activity: datetime | None


class TokenCache:
    """Recently looked-up tokens by hash: at most ``size``, each for ``ttl`` seconds.

    Owned by the hub's :class:`hub.services.identity.IdentityCache`, which drops entries when
    the rows change; anything else reads tokens with :func:`lookup` (no cache).
    """

    def __init__(self, size: int = CACHE_SIZE, ttl: float = CACHE_TTL) -> None:
        self._entries: TTLCache[str, CachedToken] = TTLCache(size, ttl, timer=time.monotonic)

    def lookup(self, session: Session, secret: str) -> CachedToken | None:
        """Like :func:`lookup`, answered from the cache when the token was seen recently."""
        hashed = hash_token(secret)
        tok = self._entries.get(hashed)
        if tok is None:
            tok = _load(session, hashed)
            if tok is None:
                return None
            self._entries[hashed] = tok
        return None if _expired(tok) else tok

    def forget(self, hashed: str | None = None) -> None:
        """Drop one token (or all) from the cache, e.g. after revocation."""
        if hashed is None:
            self._entries.clear()
        else:
            self._entries.pop(hashed, None)


def create(
    session: Session,
    *,
    user_id: int | None,
    kind: str = "api",
    scopes: list[str] | None = None,
    note: str = "",
    expires_in: float | None = None,
    server_id: int | None = None,
    client_id: str | None = None,
    session_id: int | None = None,
    service_name: str | None = None,
    secret: str | None = None,
) -> tuple[str, APIToken]:
    """Mint a token; returns the plaintext (shown once) and the new row."""
    secret = secret or new_secret()
    row = APIToken(
        hashed=hash_token(secret), prefix=secret[:4], kind=kind, user_id=user_id,
        scopes=list(scopes if scopes is not None else ["inherit"]), note=note,
        server_id=server_id, client_id=client_id, session_id=session_id,
        service_name=service_name,
        expires_at=(utcnow() + timedelta(seconds=expires_in)) if expires_in else None,
    )
    session.add(row)
    session.flush()
    return secret, row


def lookup(session: Session, secret: str) -> CachedToken | None:
    """The live token for ``secret``, or None (unknown or expired); always a query."""
    tok = _load(session, hash_token(secret))
    return None if tok is None or _expired(tok) else tok


def _load(session: Session, hashed: str) -> CachedToken | None:
    row = session.scalar(select(APIToken).where(APIToken.hashed == hashed))
    if row is None:
        return None
    return CachedToken(row.id, row.kind, row.user_id, row.service_name, row.server_id,
                       row.session_id, tuple(row.scopes), row.expires_at, row.last_activity)


def _expired(tok: CachedToken) -> bool:
    return tok.expires_at is not None and tok.expires_at <= utcnow()


def touch(session: Session, tok: CachedToken) -> None:
    """Record use of a token, coarsely."""
    now = utcnow()
    if tok.last_activity is None or now - tok.last_activity > ACTIVITY_RESOLUTION:
        row = session.get(APIToken, tok.id)
        if row is not None:
            row.last_activity = now  # a change to the row: caches drop it at the flush
