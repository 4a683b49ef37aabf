"""Groups: creation, lookup, membership, properties and deletion.

Handlers, the CLI and the start-up loader call these functions inside a
:func:`hub.db.database.transaction`. Errors are :class:`GroupError` subclasses whose message is
safe to show and whose ``status`` is what an API answers (400, 404, 409). Group names follow the
username rules without case folding (:func:`hub.services.names.validate_group_name`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from hub.db.models import Group, User
from hub.services import names


class GroupError(ValueError):
    """A group operation failed; ``status`` is the HTTP status an API should answer."""

    status = 400


class GroupExists(GroupError):
    status = 409


class NoSuchGroup(GroupError):
    status = 404


def clean_name(name: str) -> str:
    """``name`` if it is an acceptable group name, else :class:`GroupError`."""
    try:
        return names.validate_group_name(name)
    except names.NameError_ as e:
        raise GroupError(str(e).replace("username", "group name")) from None


def get(session: Session, name: str) -> Group | None:
    """The group called ``name`` (exact), with its members and roles loaded, or None."""
    return session.scalar(
        select(Group).where(Group.name == name)
        .options(selectinload(Group.users), selectinload(Group.roles))
    )


def list_page(session: Session, offset: int, limit: int,
              visible: Iterable[str] | None = None) -> tuple[list[Group], int]:
    """Groups by id (members and roles loaded), one page, and how many there are in all;
    only those named in ``visible`` when it is given."""
    query = select(Group).options(selectinload(Group.users), selectinload(Group.roles))
    if visible is not None:
        query = query.where(Group.name.in_(list(visible)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    page = session.scalars(query.order_by(Group.id).offset(offset).limit(limit)).all()
    return list(page), total


def require(session: Session, name: str) -> Group:
    group = get(session, name)
    if group is None:
        raise NoSuchGroup(f"No such group: {name}")
    return group


def find_users(session: Session, usernames: Iterable[str]) -> list[User]:
    """The users named (normalized like logins); :class:`GroupError` (400) for unknown ones."""
    wanted = {names.normalize_username(n): n for n in usernames}
    found = {u.name: u for u in session.scalars(
        select(User).where(User.name.in_(list(wanted))).options(selectinload(User.groups)))}
    missing = sorted(raw for clean, raw in wanted.items() if clean not in found)
    if missing:
        shown = ", ".join(repr(m[:64]) for m in missing[:10])
        raise GroupError(f"No such user: {shown}")
    return [found[clean] for clean in wanted]


def create(session: Session, name: str, users: Iterable[User] = (),
           properties: Mapping[str, Any] | None = None) -> Group:
    """Create one group; :class:`GroupExists` (409) or :class:`GroupError` for a bad name."""
    return create_many(session, [name], users, properties)[0]


def create_many(session: Session, group_names: Iterable[str], users: Iterable[User] = (),
                properties: Mapping[str, Any] | None = None) -> list[Group]:
    """Create several groups at once, each with ``users`` as members; all or nothing."""
    cleaned = [clean_name(n) for n in group_names]
    if not cleaned:
        raise GroupError("No group names given")
    if len(set(cleaned)) != len(cleaned):
        raise GroupError("Duplicate group names in request")
    existing = session.scalars(select(Group.name).where(Group.name.in_(cleaned))).all()
    if existing:
        raise GroupExists(f"Group already exists: {', '.join(sorted(existing)[:20])}")
    members = list(users)
    groups = [Group(name=n, users=list(members), properties=dict(properties or {}))
              for n in cleaned]
    session.add_all(groups)
    session.flush()
    return groups


def add_users(group: Group, users: Iterable[User]) -> None:
    """Add members (already present ones are fine)."""
    present = {u.id for u in group.users}
    for user in users:
        if user.id not in present:
            group.users.append(user)
            present.add(user.id)


def remove_users(group: Group, users: Iterable[User]) -> None:
    """Remove members (absent ones are fine)."""
    gone = {u.id for u in users}
    group.users = [u for u in group.users if u.id not in gone]


def set_properties(group: Group, properties: Mapping[str, Any]) -> None:
    """Replace the group's free-form properties."""
    group.properties = dict(properties)


def delete(session: Session, group: Group) -> None:
    """Delete a group; its members and roles stay, only the links go."""
    session.delete(group)
    session.flush()
