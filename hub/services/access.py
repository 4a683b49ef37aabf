"""Who may log in, who is an admin, and which hub groups a user is in — for every authenticator.

:func:`decide` is the pure rule (tested without sockets); :func:`apply` carries a decision into
the database at login. The rules, from the ``allowed_users``, ``blocked_users``,
``allowed_groups``, ``admin_users``, ``admin_groups`` and ``manage_groups`` settings:

1. a blocked user never logs in, admin or not;
2. admins (``admin_users``, members of ``admin_groups``) always may;
3. with neither ``allowed_users`` nor ``allowed_groups`` set, everyone the authenticator
   accepted may; otherwise only listed users and members of allowed groups.

Group rules use the groups the authenticator reported (:attr:`AuthResult.groups`); an
authenticator that reports none (``native``, ``pam``, ``dummy``) is judged by the user lists only.
Membership of ``admin_groups`` makes a user admin at login; leaving them does not take admin
away (as with JupyterHub's OAuthenticator: admin may also have been granted in the hub, through
``admin_users`` or the API, and the hub cannot tell which) — an admin removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from hub.config import Config
from hub.db.models import User
from hub.services import groups as group_service
from hub.services import names


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`: whether to let the user in, and with what."""

    allowed: bool
    #: True/False: set the admin flag; None: leave it as the hub has it.
    admin: bool | None
    #: Why a login was refused, safe to show the user ("" when allowed).
    reason: str = ""


REFUSED = "You are not allowed to use this hub. Ask its administrators for access."


def _names(values: list[str]) -> set[str]:
    return {names.normalize_username(v) for v in values}


def decide(config: Config, username: str, groups: list[str] | None) -> Decision:
    """Apply the rules of the module docstring to a user the authenticator accepted."""
    if username in _names(config.blocked_users):
        return Decision(False, None, REFUSED)
    member = set(groups or ())
    by_group_admin = groups is not None and bool(member & set(config.admin_groups))
    if username in _names(config.admin_users) or by_group_admin:
        return Decision(True, True)
    admin = None
    if not config.allowed_users and not config.allowed_groups:
        return Decision(True, admin)
    if username in _names(config.allowed_users) or member & set(config.allowed_groups):
        return Decision(True, admin)
    return Decision(False, None, REFUSED)


def apply(session: Session, user: User, decision: Decision, config: Config,
          groups: list[str] | None) -> None:
    """Set the admin flag and (with ``manage_groups``) the user's hub groups, creating groups
    the hub does not have yet; names a hub group cannot have are skipped."""
    if decision.admin is not None:
        user.admin = decision.admin
    if not config.manage_groups or groups is None:
        return
    wanted: set[str] = set()
    for raw in groups:
        try:
            wanted.add(group_service.clean_name(raw))
        except group_service.GroupError:
            continue
    for group in list(user.groups):
        if group.name not in wanted:
            group_service.remove_users(group, [user])
    present = {g.name for g in user.groups}
    for name in sorted(wanted - present):
        group = group_service.get(session, name) or group_service.create(session, name)
        group_service.add_users(group, [user])
