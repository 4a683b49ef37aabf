"""``himalia token``, ``himalia db upgrade|status`` and ``himalia config``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alembic.util import CommandError
from sqlalchemy import inspect

from hub.cli.common import CLIError, Parser, add_db_arguments, connect, open_database, scope_list
from hub.config import Config, describe
from hub.db.database import backup_sqlite, current_revision, head_revision, transaction, upgrade
from hub.services import tokens
from hub.services import users as accounts


def add_parsers(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register ``token``, ``db`` and ``config``."""
    p = commands.add_parser("token", help="Print a new API token for a user.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--note", default="created by `himalia token`",
                   help="What the token is for (shown in the token list).")
    p.add_argument("--expires-in", type=_seconds, metavar="SECONDS",
                   help="Lifetime in seconds (default: never, or token_max_age_days).")
    p.add_argument("--scopes", type=scope_list, metavar="A,B",
                   help="Comma-separated scopes (default: everything the user may do).")
    p.set_defaults(func=cmd_token)
    add_db_arguments(p)

    db = commands.add_parser("db", help="Database schema: status and upgrade.")
    sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    p = sub.add_parser("upgrade", help="Back up SQLite, then migrate to the newest schema.")
    p.set_defaults(func=cmd_db_upgrade)
    add_db_arguments(p)
    p = sub.add_parser("status", help="Compare the database's schema revision with the code's; "
                                      "exits 1 when an upgrade is needed.")
    p.set_defaults(func=cmd_db_status)
    add_db_arguments(p)

    p = commands.add_parser("config", help="Print every setting as a Markdown table.")
    p.set_defaults(func=cmd_config)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def cmd_token(args: argparse.Namespace, cfg: Config) -> int:
    """Mint an API token for a user; stdout gets the token and nothing else."""
    expires_in: float | None = args.expires_in
    max_seconds = float(cfg.token_max_age_days) * 86400
    if max_seconds > 0 and (expires_in is None or expires_in > max_seconds):
        if expires_in is not None:
            print(f"note: token_max_age_days limits the lifetime to {max_seconds:g} seconds",
                  file=sys.stderr)
        expires_in = max_seconds
    with open_database(cfg) as db, transaction(db) as session:
        user = accounts.require(session, args.name)
        secret, _row = tokens.create(session, user_id=user.id, scopes=args.scopes,
                                     note=args.note[:1000], expires_in=expires_in)
    print(secret)
    return 0


def _sqlite_path(cfg: Config) -> Path | None:
    url = cfg.database_url
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def cmd_db_status(args: argparse.Namespace, cfg: Config) -> int:
    """Print the current and head revisions; exit 1 if the database needs an upgrade."""
    head = head_revision()
    path = _sqlite_path(cfg)
    if path is not None and not path.exists():
        print(f"database: {path} (does not exist yet; the hub creates it at start)")
        print(f"head revision: {head}")
        return 0
    engine = connect(cfg)
    try:
        current = current_revision(engine)
        has_tables = bool(inspect(engine).get_table_names())
        print(f"database: {engine.url.render_as_string(hide_password=True)}")
    finally:
        engine.dispose()
    print(f"current revision: {current or 'none'}")
    print(f"head revision: {head}")
    if current == head:
        print("up to date")
        return 0
    if current is None and not has_tables:
        print("empty: the hub creates the schema at start")
        return 0
    print("outdated: run `himalia db upgrade`")
    return 1


def cmd_db_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    """Migrate to the newest schema, after backing up an SQLite database that has data."""
    head = head_revision()
    engine = connect(cfg)
    try:
        current = current_revision(engine)
        if current == head:
            print(f"database is up to date (revision {head}); nothing to do")
            return 0
        if current is None and inspect(engine).get_table_names():
            raise CLIError("the database has tables but no schema revision (not made by "
                           "himalia, or its alembic_version row was deleted); not migrating it")
        saved = None
        if current is not None:
            saved = backup_sqlite(engine.url.render_as_string(hide_password=False))
        if saved is not None:
            print(f"backed up the database to {saved}")
        try:
            upgrade(engine, backup=False)
        except CommandError as e:
            raise CLIError(f"cannot upgrade from revision {current}: {e}") from None
    finally:
        engine.dispose()
    print(f"upgraded the database from revision {current or 'none'} to {head}")
    return 0


def cmd_config(args: argparse.Namespace, cfg: Config) -> int:
    """Print the settings registry (name, flag, environment variable, default, help)."""
    print(describe())
    return 0
