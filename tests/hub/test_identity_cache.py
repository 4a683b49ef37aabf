"""The identity cache: fast, but never serves a revoked token or a stale privilege.

Pure logic against a real SQLite file (no sockets), plus one end-to-end check through a
running hub that an admin demoted through the API loses admin rights on the very next request.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from hub.db.database import (
    ChangeDetector,
    changed_elsewhere,
    check_schema,
    make_engine,
    make_sessionmaker,
    transaction,
)
from hub.db.models import APIToken, Group, User
from hub.services import identity as ident
from hub.services import tokens, users
from tests.hubproc import HubProcess

ROLES: dict[str, list[str]] = {}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    check_schema(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def cache(db: sessionmaker[Session]) -> ident.IdentityCache:
    return ident.IdentityCache(db)


def _user_with_token(db: sessionmaker[Session], name: str, admin: bool = False,
                     expires_in: float | None = None) -> str:
    with transaction(db) as session:
        user = users.create(session, name, admin=admin)
        secret, _ = tokens.create(session, user_id=user.id, expires_in=expires_in)
    return secret


def _resolve(cache: ident.IdentityCache, secret: str) -> ident.Identity | None:
    found = cache.cached_token(secret, ROLES)
    if found is not None:
        return found
    with transaction(cache.db) as session:
        return cache.from_token(session, secret, ROLES)


def test_a_resolved_token_is_served_from_the_cache(db: sessionmaker[Session],
                                                   cache: ident.IdentityCache) -> None:
    secret = _user_with_token(db, "alice")
    assert cache.cached_token(secret, ROLES) is None
    first = _resolve(cache, secret)
    assert first is not None and first.name == "alice" and not first.admin
    # The first use recorded the token's last_activity: a commit, so one more resolution.
    second = _resolve(cache, secret)
    assert second == first
    assert cache.cached_token(secret, ROLES) is second
    assert cache.cached_token(secret, {"other": []}) is None  # other roles: not reused


def test_revoking_a_token_takes_effect_at_once(db: sessionmaker[Session],
                                               cache: ident.IdentityCache) -> None:
    secret = _user_with_token(db, "alice")
    assert _resolve(cache, secret) is not None
    with transaction(db) as session:
        tok = tokens.lookup(session, secret)
        assert tok is not None
        row = session.get(APIToken, tok.id)
        assert row is not None
        session.delete(row)  # no call to forget it: the session's events do
    assert cache.cached_token(secret, ROLES) is None
    assert _resolve(cache, secret) is None


def test_demotion_deletion_and_group_changes_drop_identities(
        db: sessionmaker[Session], cache: ident.IdentityCache) -> None:
    secret = _user_with_token(db, "root", admin=True)
    assert (found := _resolve(cache, secret)) is not None and found.admin
    with transaction(db) as session:
        user = users.get(session, "root")
        assert user is not None
        user.admin = False
    assert cache.cached_token(secret, ROLES) is None
    demoted = _resolve(cache, secret)
    assert demoted is not None and not demoted.admin and not demoted.can("admin:users")

    with transaction(db) as session:
        group = Group(name="physics")
        session.add(group)
        user = users.get(session, "root")
        assert user is not None
        group.users.append(user)
    assert cache.cached_token(secret, ROLES) is None
    grouped = _resolve(cache, secret)
    assert grouped is not None and grouped.groups == frozenset({"physics"})

    with transaction(db) as session:
        user = users.get(session, "root")
        assert user is not None
        users.delete(session, user)
    assert cache.cached_token(secret, ROLES) is None
    assert _resolve(cache, secret) is None


def test_a_commit_by_another_process_empties_the_cache(db: sessionmaker[Session],
                                                       cache: ident.IdentityCache,
                                                       tmp_path: Path) -> None:
    """What the ``himalia`` CLI does: write with a connection of its own."""
    secret = _user_with_token(db, "bob")
    assert _resolve(cache, secret) is not None
    changed_elsewhere(db)  # the detector now knows the current state
    assert cache.cached_token(secret, ROLES) is not None
    with sqlite3.connect(tmp_path / "hub.sqlite") as other:
        other.execute("UPDATE users SET admin = 1 WHERE name = 'bob'")
    assert cache.cached_token(secret, ROLES) is None
    promoted = _resolve(cache, secret)
    assert promoted is not None and promoted.admin


def test_a_token_is_not_served_past_its_expiry(db: sessionmaker[Session],
                                               cache: ident.IdentityCache) -> None:
    secret = _user_with_token(db, "carol", expires_in=0.3)
    assert _resolve(cache, secret) is not None
    time.sleep(0.4)
    assert cache.cached_token(secret, ROLES) is None
    assert _resolve(cache, secret) is None


def test_change_detector_without_sqlite_file() -> None:
    engine = make_engine("sqlite://")
    detector = ChangeDetector(engine)
    assert detector.changed() is False
    detector.close()
    engine.dispose()


def test_new_rows_cost_one_resolution(db: sessionmaker[Session],
                                      cache: ident.IdentityCache) -> None:
    """A commit anywhere (here: creating users) empties the cache once — the detector cannot
    tell what changed — and the next resolution is cached again."""
    secret = _user_with_token(db, "dave")
    assert _resolve(cache, secret) is not None
    changed_elsewhere(db)
    with transaction(db) as session:
        users.create_many(session, [f"new{i}" for i in range(5)])
        session.add(User(name="plain"))
    assert cache.cached_token(secret, ROLES) is None
    assert _resolve(cache, secret) is not None
    assert cache.cached_token(secret, ROLES) is not None


def test_demoted_admin_loses_rights_on_the_next_request(hub: HubProcess) -> None:
    name, _ = hub.new_user("dem", admin=True)
    token = hub.make_token(name)
    for _ in range(3):  # resolved, then served from the cache
        assert hub.api("GET", "/info", token=token).status_code == 200
    r = hub.api("PATCH", f"/users/{name}", json={"admin": False})
    assert r.status_code == 200 and r.json()["admin"] is False
    assert hub.api("GET", "/info", token=token).status_code == 403
    assert hub.api("GET", "/user", token=token).json()["admin"] is False


def test_bulk_token_deletes_drop_identities(db: sessionmaker[Session],
                                            cache: ident.IdentityCache) -> None:
    """A ``DELETE`` statement names no rows (a stopped server's tokens go that way)."""
    secret = _user_with_token(db, "erin")
    _resolve(cache, secret)
    assert _resolve(cache, secret) is not None
    changed_elsewhere(db)
    assert cache.cached_token(secret, ROLES) is not None
    with transaction(db) as session:
        session.execute(delete(APIToken).where(APIToken.hashed == tokens.hash_token(secret)))
    assert cache.cached_token(secret, ROLES) is None
    assert _resolve(cache, secret) is None


def test_activity_keeps_identities(db: sessionmaker[Session],
                                   cache: ident.IdentityCache) -> None:
    """Recording activity changes nobody's scopes: the session events keep the cache (the
    SQLite change detector, which cannot tell what changed, is set aside here)."""
    secret = _user_with_token(db, "fay")
    _resolve(cache, secret)
    assert _resolve(cache, secret) is not None
    changed_elsewhere(db)
    with transaction(db) as session:
        user = users.get(session, "fay")
        assert user is not None
        user.last_activity = user.created
    changed_elsewhere(db)
    assert cache.cached_token(secret, ROLES) is not None


def test_each_hub_has_its_own_cache(db: sessionmaker[Session], cache: ident.IdentityCache,
                                    tmp_path: Path) -> None:
    """No module state: another hub's cache (another database) neither sees nor drops ours."""
    secret = _user_with_token(db, "gus")
    _resolve(cache, secret)
    assert _resolve(cache, secret) is not None
    changed_elsewhere(db)
    engine = make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    check_schema(engine)
    other = ident.IdentityCache(make_sessionmaker(engine))
    assert other.cached_token(secret, ROLES) is None
    with transaction(other.db) as session:  # the same name, deleted in the other database
        users.delete(session, users.create(session, "gus"))
    other.forget_all()
    assert cache.cached_token(secret, ROLES) is not None
    engine.dispose()
