"""What happens in the database when someone has proven who they are, whatever the authenticator:
the access rules (:mod:`hub.services.access`), the user created if new (except for ``native``
accounts, which admins create), admin and groups updated, auth_state stored (encrypted).

Nothing is written for a refused login: :class:`SignInRefused` is raised before any change.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from hub.db.models import User
from hub.services import access, names, users
from hub.services.auth import Authenticator, AuthResult
from hub.services.users import NameCheck

log = logging.getLogger(__name__)


class SignInRefused(Exception):
    """``message`` is safe to show the user."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def as_result(outcome: str | AuthResult) -> AuthResult:
    """What :meth:`Authenticator.authenticate` returned, as an :class:`AuthResult`."""
    return AuthResult(name=outcome) if isinstance(outcome, str) else outcome


def sign_in(session: Session, authenticator: Authenticator, result: AuthResult,
            check_name: NameCheck, unknown_message: str) -> User:
    """The user ``result`` names, created or updated; :class:`SignInRefused` otherwise
    (``unknown_message`` for a native account that does not exist)."""
    cfg = authenticator.config
    name = names.normalize_username(result.name)
    try:
        names.validate_username(name)
    except names.NameError_ as e:
        raise SignInRefused(f"Your account name cannot be used here: {e}") from None
    decision = access.decide(cfg, name, result.groups)
    if not decision.allowed:
        raise SignInRefused(decision.reason)
    user = users.get(session, name)
    if user is None:
        if authenticator.manages_passwords:
            raise SignInRefused(unknown_message)
        try:
            user = users.create(session, name, check=check_name)
        except users.UserError as e:
            raise SignInRefused(str(e)) from None
    access.apply(session, user, decision, cfg, result.groups)
    crypt = authenticator.auth_state
    if crypt.enabled and result.auth_state is not None:
        user.encrypted_auth_state = crypt.encrypt(result.auth_state)
    return user
