"""Users' API tokens as the REST API serves them: listing, finding, and minting on request.

Minting follows JupyterHub 3+: a request's ``roles`` are resolved to their scopes (a token keeps
scopes, not roles); a request naming neither scopes nor roles gets ``inherit`` (all its owner may
do), an explicitly empty list no scopes at all. The scopes must be valid and within both the
owner's and the caller's, and ``token_max_age_days`` caps the lifetime. Errors are
:class:`TokenRequestError` with the HTTP status to answer and a message safe to show.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.db.models import APIToken, User
from hub.services import rbac, tokens
from hub.services import scopes as sc
from hub.services.identity import Identity, user_scopes


class TokenRequestError(ValueError):
    """A token request cannot be granted; ``status`` is what the API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TokenRequest:
    """What ``POST /users/<name>/tokens`` asked for (types already checked)."""

    scopes: list[str] | None = None
    roles: list[str] | None = None
    note: str = ""
    expires_in: float | None = None


def list_for(session: Session, user: User) -> list[APIToken]:
    """The user's API and OAuth tokens (not their servers' own), oldest first."""
    return list(session.scalars(select(APIToken).where(
        APIToken.user_id == user.id, APIToken.kind.in_(("api", "oauth"))).order_by(APIToken.id)))


def find(session: Session, user: User, token_id: str) -> APIToken | None:
    """The user's token with public id ``token_id`` (``a12``, ``o3``), or None."""
    key = tokens.parse_public_id(token_id)
    row = session.get(APIToken, key) if key is not None else None
    if row is None or row.user_id != user.id or row.kind == "server":
        return None
    return row


def mint(session: Session, owner: User, caller: Identity, request: TokenRequest,
         custom_roles: dict[str, list[str]], max_age_days: float) -> tuple[str, APIToken]:
    """Create the token ``caller`` asked for on ``owner``'s behalf; returns (secret, row).

    ``request.expires_in``, when given, is positive (checked when parsing the request).
    """
    expires_in = request.expires_in
    if max_age_days > 0 and (expires_in is None or expires_in > max_age_days * 86400):
        expires_in = max_age_days * 86400
    role_scopes = None
    if request.roles is not None:
        try:
            role_scopes = rbac.scopes_of_roles(session, request.roles)
        except rbac.RBACError as e:
            raise TokenRequestError(400, str(e)) from None
    scopes = _granted(owner, caller, request.scopes, role_scopes, custom_roles)
    note = request.note[:1000]
    if caller.name != owner.name:
        note = (note + f" (requested by {caller.name})").strip()
    return tokens.create(session, user_id=owner.id, scopes=scopes, note=note,
                         expires_in=expires_in)


def _granted(owner: User, caller: Identity, requested: list[str] | None,
             role_scopes: list[str] | None, custom_roles: dict[str, list[str]]) -> list[str]:
    """The new token's scopes: valid, and within both the caller's and the owner's."""
    if requested is None and role_scopes is None:
        return ["inherit"]
    raw = [*(requested or []), *(role_scopes or [])]
    if not raw:
        return []
    _validate(raw)
    wanted = sc.expand(raw, owner=owner.name)
    if "inherit" in wanted:
        return raw
    allowed = sc.intersect(sc.intersect(wanted, user_scopes(owner, custom_roles)),
                           set(caller.scopes))
    missing = sorted(wanted - allowed)
    if missing:
        raise TokenRequestError(403, "Requested scopes exceed what is allowed: "
                                     + ", ".join(missing[:10]))
    return raw


def _validate(raw: Iterable[str]) -> None:
    for scope in raw:
        try:
            sc.validate(scope)
        except sc.ScopeError as e:
            raise TokenRequestError(400, str(e)) from None
