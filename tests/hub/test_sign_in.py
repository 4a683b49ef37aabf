"""What a sign-in writes to the database, for any authenticator (in-process, SQLite in memory):
refusals write nothing, groups are synced only with manage_groups, auth_state only with a key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config
from hub.db.database import check_schema, make_engine, make_sessionmaker, transaction
from hub.services import groups, users
from hub.services.auth import AuthResult, DummyAuthenticator, NativeAuthenticator
from hub.services.sign_in import SignInRefused, sign_in


@pytest.fixture
def db() -> Iterator[sessionmaker[Session]]:
    engine = make_engine("sqlite://")
    check_schema(engine)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def _ok(name: str) -> None:
    return None


def test_blocked_and_unknown_native_users_write_nothing(db: sessionmaker[Session]) -> None:
    cfg = Config(blocked_users=["eve"])
    native = NativeAuthenticator(db, cfg)
    dummy = DummyAuthenticator(db, cfg)
    with transaction(db) as session:
        with pytest.raises(SignInRefused, match="not allowed"):
            sign_in(session, dummy, AuthResult("Eve"), _ok, "bad login")
        with pytest.raises(SignInRefused, match="bad login"):  # admins create native accounts
            sign_in(session, native, AuthResult("newcomer"), _ok, "bad login")
        assert users.get(session, "eve") is None and users.get(session, "newcomer") is None
        assert sign_in(session, dummy, AuthResult("ann"), _ok, "bad login").name == "ann"


def test_manage_groups_syncs_and_admin_groups_promote(db: sessionmaker[Session]) -> None:
    cfg = Config(manage_groups=True, admin_groups=["ops"])
    auth = DummyAuthenticator(db, cfg)
    with transaction(db) as session:
        groups.create(session, "local-only")
        user = sign_in(session, auth, AuthResult("ann", groups=["gpu", "ops", "bad/name"]),
                       _ok, "x")
        assert sorted(g.name for g in user.groups) == ["gpu", "ops"] and user.admin
        user = sign_in(session, auth, AuthResult("ann", groups=["gpu"]), _ok, "x")
        assert [g.name for g in user.groups] == ["gpu"]
        assert user.admin  # leaving admin_groups does not take admin away
        user = sign_in(session, auth, AuthResult("ann"), _ok, "x")  # no groups known: kept
        assert [g.name for g in user.groups] == ["gpu"]
    without = DummyAuthenticator(db, Config())
    with transaction(db) as session:
        user = sign_in(session, without, AuthResult("ann", groups=["other"]), _ok, "x")
        assert [g.name for g in user.groups] == ["gpu"]  # manage_groups off: untouched


def test_auth_state_is_stored_only_with_a_key(db: sessionmaker[Session]) -> None:
    keyed = DummyAuthenticator(db, Config(auth_state_key=Fernet.generate_key().decode()))
    plain = DummyAuthenticator(db, Config())
    with transaction(db) as session:
        a = sign_in(session, keyed, AuthResult("a", auth_state={"access_token": "t0k"}), _ok, "")
        b = sign_in(session, plain, AuthResult("b", auth_state={"access_token": "t0k"}), _ok, "")
        assert a.encrypted_auth_state and b"t0k" not in a.encrypted_auth_state
        assert keyed.auth_state.decrypt(a.encrypted_auth_state) == {"access_token": "t0k"}
        assert b.encrypted_auth_state is None
