"""What every ``himalia`` subcommand shares: its error type, database flags and access.

Subcommands run in their own short-lived process next to a running hub, on the same database:
they find it through the same settings (``--config``, ``--data-dir``, ``--db-url``, or the
``HIMALIA_*`` environment), and SQLite's WAL mode and busy timeout let both write at once.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from hub.config import OPTIONS, Config
from hub.db.database import check_schema, make_engine, make_sessionmaker
from hub.secrets_store import ensure_private_dir
from hub.services import auth
from hub.services import scopes as sc

#: The settings a subcommand needs to find the hub's database.
DB_SETTINGS = ("data_dir", "db_url")


class Parser(argparse.ArgumentParser):
    """An argument parser without prefix matching (flag names are public API, so an
    abbreviation must not silently work today and break when a new flag shares its prefix).
    Subcommand parsers are created with the same class, so the rule holds everywhere."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class CLIError(Exception):
    """An expected failure: ``main`` prints the message (no traceback) and exits with ``code``.

    ``code`` is 2 for usage errors (bad arguments) and 1 for everything else.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_db_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--data-dir`` and ``--db-url`` (help from the config registry).

    Their defaults are suppressed so that a value given before the subcommand
    (``himalia --data-dir X users list``) is not overwritten by the subcommand's default.
    """
    group = parser.add_argument_group("database (same settings as the hub)")
    group.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file.")
    for opt in OPTIONS:
        if opt.name in DB_SETTINGS:
            group.add_argument(opt.flag, dest=opt.name, default=argparse.SUPPRESS, help=opt.help)


def connect(cfg: Config) -> Engine:
    """An engine on the configured database; creates the default data directory if missing."""
    if not cfg.db_url:
        ensure_private_dir(cfg.data_path)
    try:
        return make_engine(cfg.database_url)
    except ArgumentError:
        raise CLIError(f"invalid database URL: {cfg.db_url!r}", code=2) from None
    except ModuleNotFoundError as e:
        raise CLIError(
            f"the database driver {e.name!r} is not installed "
            "(for PostgreSQL: pip install 'himalia[postgres]')"
        ) from None


@contextmanager
def open_database(cfg: Config) -> Iterator[sessionmaker[Session]]:
    """A session factory on a database whose schema is current (created if empty).

    Raises :class:`hub.db.database.SchemaOutdated` for an old schema, like the hub does.
    """
    engine = connect(cfg)
    try:
        check_schema(engine)
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def require_password_auth(cfg: Config) -> None:
    """Refuse to store passwords the configured authenticator would never check."""
    try:
        cls = auth.load_class(cfg.authenticator)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if not cls.manages_passwords:
        raise CLIError(
            f"the {cfg.authenticator} authenticator does not use passwords stored by the hub; "
            "passwords can be set only with the native authenticator"
        )


def read_new_password() -> str:
    """A new password: prompted twice (no echo) on a terminal, else one line of stdin.

    The password is validated (length limits) but never echoed or logged.
    """
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Repeat the password: ") != first:
            raise CLIError("the passwords do not match")
        password = first
    else:
        line = sys.stdin.readline()
        if not line:
            raise CLIError("expected a password on standard input, got nothing")
        password = line.rstrip("\r\n")
    try:
        auth.validate_password(password)
    except ValueError as e:
        raise CLIError(str(e)) from None
    return password


def confirm(question: str) -> bool:
    """Ask a yes/no question on a terminal (default no); prompts go to stderr."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def scope_list(text: str) -> list[str]:
    """argparse type: a comma-separated list of valid scopes."""
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    if not scopes:
        raise argparse.ArgumentTypeError("no scopes given")
    for scope in scopes:
        try:
            sc.validate(scope)
        except sc.ScopeError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return scopes
