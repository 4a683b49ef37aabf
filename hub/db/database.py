"""Engine creation and schema versioning (Alembic) for the hub database.

SQLite gets WAL journaling, a busy timeout and enforced foreign keys so that the hub, the admin
CLI and background loops can write concurrently without "database is locked" errors.
A database whose schema is older than the code is never used: :func:`check_schema` raises
:class:`SchemaOutdated`, naming ``himalia db upgrade``, which backs SQLite up before migrating.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from hub.db.models import utcnow

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


class SchemaOutdated(RuntimeError):
    """The database schema is older (or newer) than this version of the hub."""


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be used right now (down, restarting, locked
    past the busy timeout): worth a 503 and a retry, not a 500."""
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                            sa_exc.DisconnectionError)) or (
        isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated))


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite, with WAL, busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


class ChangeDetector:
    """Tells whether anyone else committed to an SQLite database since the last look.

    Reads ``PRAGMA data_version`` on a private connection that never writes: its value changes
    whenever another connection — another process such as the ``himalia`` CLI, or this
    process's pooled connections — commits. A few microseconds per call, so a cache can be
    checked on every request. Other databases (and in-memory SQLite) have no such counter:
    :meth:`changed` is then always False and callers rely on their own time limits.
    """

    def __init__(self, engine: Engine) -> None:
        self._conn: sqlite3.Connection | None = None
        self._last = 0
        path = engine.url.database
        if engine.url.get_backend_name() == "sqlite" and path and path != ":memory:":
            self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            self._last = self._version()

    def _version(self) -> int:
        assert self._conn is not None
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        if self._conn is None:
            return False
        try:
            version = self._version()
        except sqlite3.Error:
            return True  # cannot tell: assume it changed
        if version == self._last:
            return False
        self._last = version
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_detectors: weakref.WeakKeyDictionary[Engine, ChangeDetector] = weakref.WeakKeyDictionary()


def changed_elsewhere(factory: sessionmaker[Session]) -> bool:
    """Whether the database behind ``factory`` got a commit from another connection since the
    previous call (always False where that cannot be known; see :class:`ChangeDetector`)."""
    engine = factory.kw.get("bind")
    if not isinstance(engine, Engine):
        return False
    detector = _detectors.get(engine)
    if detector is None:
        detector = _detectors[engine] = ChangeDetector(engine)
        weakref.finalize(engine, detector.close)
    return detector.changed()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with factory() as session, session.begin():
        yield session


def _alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration revision this code knows."""
    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Create the schema on an empty database; refuse an outdated one."""
    current = current_revision(engine)
    if current is None:
        if inspect(engine).get_table_names():
            raise SchemaOutdated(
                "the database has tables but no Himalia schema version: it is not a Himalia "
                "database (or was made by another program); point --db-url at an empty or "
                "Himalia database"
            )
        log.info("empty database: creating the schema")
        upgrade(engine, backup=False)
        return
    head = head_revision()
    if current != head:
        raise SchemaOutdated(
            f"database schema is at revision {current}, this hub needs {head}: "
            "back up the database and run `himalia db upgrade`"
        )


def backup_sqlite(url: str) -> Path | None:
    """Copy an SQLite database file aside before a migration; returns the backup path."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url[len("sqlite:///") :])
    if not path.exists():
        return None
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"{path.name}.{stamp}.bak")
    # The sqlite3 backup API copies a consistent snapshot even with WAL and live writers.
    with sqlite3.connect(path) as src, sqlite3.connect(dest) as dst:
        src.backup(dst)
    shutil.copymode(path, dest)
    return dest


def upgrade(engine: Engine, backup: bool = True) -> Path | None:
    """Migrate the database to the newest revision (backing up SQLite first)."""
    url = engine.url.render_as_string(hide_password=False)
    saved = backup_sqlite(url) if backup else None
    cfg = _alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return saved
