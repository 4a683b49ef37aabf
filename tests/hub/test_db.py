"""The database layer on SQLite and (when ``HIMALIA_TEST_PG_URL`` is set) PostgreSQL.

Schema creation on an empty database, refusal of an outdated one, migration with an SQLite
backup, and two processes writing at once without "database is locked". Each PostgreSQL test
runs in a schema of its own (``search_path`` in the URL), so tests and xdist workers never
share tables; the schema is dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, make_url, select, text

from hub.db import database
from hub.db.database import (
    SchemaOutdated,
    check_schema,
    current_revision,
    head_revision,
    make_engine,
    make_sessionmaker,
    transaction,
)
from hub.db.models import User
from hub.services import tokens, users

PG_URL = os.environ.get("HIMALIA_TEST_PG_URL", "")
TABLES = {"users", "servers", "api_tokens", "login_sessions", "oauth_clients", "oauth_codes",
          "groups", "roles", "user_groups", "user_roles", "group_roles", "alembic_version"}
NEWER_MIGRATION = '''\
"""A migration newer than the code's head, for tests only."""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("test_marker", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("test_marker")
'''


@contextmanager
def pg_schema_url(base_url: str) -> Iterator[str]:
    """A URL on a fresh, uniquely named schema of ``base_url``'s database; dropped on exit."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def newer_migrations(tmp_path: Path) -> Path:
    """A copy of the hub's migrations plus one newer revision (head ``9999``)."""
    dest = tmp_path / "migrations"
    shutil.copytree(database.MIGRATIONS, dest, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "versions" / "9999_test_marker.py").write_text(
        NEWER_MIGRATION.format(head=head_revision()))
    return dest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: an SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'himalia.sqlite'}"
        return
    if not PG_URL:
        pytest.skip("HIMALIA_TEST_PG_URL is not set (scripts/test-setup.sh starts PostgreSQL)")
    with pg_schema_url(PG_URL) as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _exec(engine: Engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))


def test_empty_database_gets_the_current_schema(engine: Engine) -> None:
    assert current_revision(engine) is None
    check_schema(engine)
    assert current_revision(engine) == head_revision()
    assert TABLES <= set(inspect(engine).get_table_names())
    check_schema(engine)  # a current schema is accepted as it is


def test_sqlite_uses_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "himalia.sqlite"
    eng = make_engine(f"sqlite:///{path}")
    try:
        check_schema(eng)
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        eng.dispose()
    # WAL is a property of the file: any other client (e.g. a backup tool) sees it too.
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


def test_unknown_revision_is_refused(engine: Engine) -> None:
    check_schema(engine)
    _exec(engine, "UPDATE alembic_version SET version_num = '0000older'")
    with pytest.raises(SchemaOutdated, match="himalia db upgrade"):
        check_schema(engine)


def test_tables_without_a_revision_are_refused(engine: Engine) -> None:
    check_schema(engine)
    _exec(engine, "DELETE FROM alembic_version")
    with pytest.raises(SchemaOutdated, match="not a Himalia database"):
        check_schema(engine)


def test_older_schema_is_refused_then_upgraded(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_head = head_revision()
    check_schema(engine)
    with transaction(make_sessionmaker(engine)) as session:
        users.create(session, "alice")
    monkeypatch.setattr(database, "MIGRATIONS", newer_migrations(tmp_path))
    with pytest.raises(SchemaOutdated, match="himalia db upgrade"):
        check_schema(engine)

    backup = database.upgrade(engine)

    assert current_revision(engine) == "9999"
    assert "test_marker" in inspect(engine).get_table_names()
    check_schema(engine)
    with make_sessionmaker(engine)() as session:
        assert session.scalars(select(User.name)).all() == ["alice"]
    if engine.dialect.name != "sqlite":
        assert backup is None
        return
    assert backup is not None and backup.exists()
    live = Path(str(engine.url.database))
    assert backup.parent == live.parent
    assert backup.stat().st_mode == live.stat().st_mode
    with sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (old_head,)
        assert conn.execute("SELECT name FROM users").fetchall() == [("alice",)]
    conn.close()


WRITER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from hub.db.database import make_engine, make_sessionmaker, transaction
    from hub.db.models import utcnow
    from hub.services import users

    url, prefix, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.005)
    for i in range(count):
        # Read-then-write transactions, the pattern of the hub and the CLI.
        with transaction(factory) as session:
            users.create(session, f"{prefix}{i}")
        with transaction(factory) as session:
            users.require(session, "shared").last_activity = utcnow()
    engine.dispose()
''')


def test_servers_keep_running_across_the_lifecycle_migration(engine: Engine) -> None:
    """0001 → 0002 adds the lifecycle columns: a started server reads as running, the rest as
    stopped, and nothing else is touched (a running server's token survives: no table copy)."""
    cfg = database._alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    _exec(engine, "INSERT INTO users (id, name, admin, created) "
                  "VALUES (1, 'alice', false, '2026-01-01 00:00:00')")
    _exec(engine, "INSERT INTO servers (id, user_id, name, state, user_options, started) VALUES "
                  "(1, 1, '', '{\"pid\": 1}', '{}', '2026-01-01 00:00:00'), "
                  "(2, 1, 'old', '{}', '{}', NULL)")
    _exec(engine, "INSERT INTO api_tokens (id, hashed, prefix, kind, user_id, server_id, scopes, "
                  "note, created) VALUES (1, 'h', 'p', 'server', 1, 1, '[]', '', "
                  "'2026-01-01 00:00:00')")

    database.upgrade(engine, backup=False)

    check_schema(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, lifecycle, stop_reason, stop_message "
                                 "FROM servers ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [("", "running", None, None),
                                            ("old", "stopped", None, None)]
        assert conn.execute(text("SELECT count(*) FROM api_tokens")).scalar() == 1


def test_two_processes_write_at_once(engine: Engine, db_url: str, tmp_path: Path) -> None:
    check_schema(engine)
    with transaction(make_sessionmaker(engine)) as session:
        users.create(session, "shared")
    go = tmp_path / "go"
    count = 100
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIMALIA_")}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, db_url, prefix, str(count), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for prefix in ("p", "q")
    ]
    for proc in procs:  # both connected and waiting: then start them together
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.communicate()[1]
    go.touch()
    started = time.monotonic()
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert "locked" not in err
        assert proc.returncode == 0, err
    with make_sessionmaker(engine)() as session:
        names = set(session.scalars(select(User.name)))
    assert len(names) == 2 * count + 1
    assert time.monotonic() - started < 60


def test_ids_are_never_reused(engine: Engine) -> None:
    """A deleted user's id must not go to the next new user: a running hub caches tokens by
    owner id, and the CLI (another process) cannot clear that cache when it deletes a user."""
    check_schema(engine)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        users.create(session, "first")
        last = users.create(session, "last")
        old_user = last.id
        _secret, token = tokens.create(session, user_id=last.id)
        old_token = token.id
    with transaction(factory) as session:
        users.delete(session, users.require(session, "last"))
    with transaction(factory) as session:
        newcomer = users.create(session, "newcomer")
        _secret, token = tokens.create(session, user_id=newcomer.id)
        assert newcomer.id > old_user and token.id > old_token
