"""API tokens: minting, hashing and lookup with a bounded cache.

Tokens are 32 random bytes (URL-safe text); only their SHA-256 is stored, so a fast hash is
safe here (unlike passwords, a token has no dictionary to guess from). A successful lookup is
cached for a short time keyed by that hash; revoking or deleting a token calls :func:`forget`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.db.models import APIToken, utcnow

CACHE_SIZE = 10_000
#: Seconds a looked-up token is reused. Revocations made in this process apply at once
#: (:func:`forget`); one made by another process (the CLI) is seen within this time.
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


_cache: OrderedDict[str, tuple[float, CachedToken]] = OrderedDict()
#: Called with the hash (or None for "all") whenever a token is forgotten: caches built on
#: top of this one (resolved identities) drop their entries too.
_forget_hooks: list[Callable[[str | None], None]] = []


def on_forget(hook: Callable[[str | None], None]) -> None:
    """Have ``hook(hashed)`` called by every :func:`forget` (``None`` means all tokens)."""
    _forget_hooks.append(hook)


def forget(hashed: str | None = None) -> None:
    """Drop one token (or all) from the cache, e.g. after revocation."""
    if hashed is None:
        _cache.clear()
    else:
        _cache.pop(hashed, None)
    for hook in _forget_hooks:
        hook(hashed)


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
    """The live token for ``secret``, or None (unknown or expired)."""
    hashed = hash_token(secret)
    now = time.monotonic()
    hit = _cache.get(hashed)
    if hit and now - hit[0] < CACHE_TTL:
        tok = hit[1]
    else:
        row = session.scalar(select(APIToken).where(APIToken.hashed == hashed))
        if row is None:
            _cache.pop(hashed, None)
            return None
        tok = CachedToken(row.id, row.kind, row.user_id, row.service_name, row.server_id,
                          row.session_id, tuple(row.scopes), row.expires_at, row.last_activity)
        _cache[hashed] = (now, tok)
        _cache.move_to_end(hashed)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    if tok.expires_at is not None and tok.expires_at <= utcnow():
        return None
    return tok


def touch(session: Session, tok: CachedToken) -> None:
    """Record use of a token, coarsely."""
    now = utcnow()
    if tok.last_activity is None or now - tok.last_activity > ACTIVITY_RESOLUTION:
        row = session.get(APIToken, tok.id)
        if row is not None:
            row.last_activity = now
            forget(row.hashed)
