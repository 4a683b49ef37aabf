"""The ``himalia`` command: run the hub, or administer its database from the shell.

Synopsis::

    himalia [serve] [HUB FLAGS]                 run the hub (flags: `himalia config`)
    himalia users add NAME... [--admin] [--password-stdin]
    himalia users list [--json]
    himalia users remove NAME... [--yes]
    himalia users set-admin NAME on|off
    himalia users passwd NAME
    himalia token NAME [--note TEXT] [--expires-in SECONDS] [--scopes A,B]
    himalia groups list [--json] | add NAME... [--users A,B] | remove NAME... [--yes]
    himalia groups add-users GROUP USER... | remove-users GROUP USER...
    himalia roles list [--json] | add NAME --scopes A,B [--description TEXT]
    himalia roles remove NAME [--yes]
    himalia roles grant|revoke NAME [--user USER]... [--group GROUP]...
    himalia db upgrade | status
    himalia config

Every subcommand takes ``--config``, ``--data-dir`` and ``--db-url`` (or ``HIMALIA_*``
variables) to find the same database as the hub, and may run while the hub does.
Exit status: 0 on success, 2 for usage errors, 1 for other failures (unknown or duplicate
user, bad name, outdated schema, unreachable database), 130 when interrupted.
Expected errors print one ``himalia: error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import cast

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from hub import __version__
from hub import config as hubconfig
from hub.cli import admin, groups, roles, users
from hub.cli.common import CLIError, Parser
from hub.config import Config, ConfigError
from hub.db.database import SchemaOutdated
from hub.services.groups import GroupError
from hub.services.rbac import RBACError
from hub.services.users import UserError

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser: hub flags at the top level, then the subcommands."""
    parser = Parser(
        prog="himalia",
        usage="%(prog)s [HUB FLAGS] [serve]\n       %(prog)s COMMAND ... [--help]",
        description="Himalia, a multi-user notebook hub. Without a command, runs the hub.",
        epilog="Every setting can also come from a TOML file (--config) or a HIMALIA_<NAME> "
               "environment variable; `himalia config` lists them all.",
    )
    parser.add_argument("--version", action="version", version=f"himalia {__version__}")
    hubconfig.add_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", prog="himalia")
    serve = commands.add_parser("serve", help="Run the hub (the default).")
    hubconfig.add_arguments(serve)
    # A subparser's defaults overwrite values parsed before it: without this,
    # `himalia --port 9000 serve` would lose the port.
    for action in serve._actions:
        action.default = argparse.SUPPRESS
    serve.set_defaults(func=cmd_serve)
    users.add_parser(commands)
    groups.add_parser(commands)
    roles.add_parser(commands)
    admin.add_parsers(commands)
    return parser


def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    """Run the hub until it stops; ``hub.start`` is imported only now (it is heavy)."""
    try:
        start = importlib.import_module("hub.start")
    except ModuleNotFoundError as e:
        if e.name != "hub.start":
            raise
        raise CLIError("this installation has no hub.start module: cannot run the hub") from None
    run = cast(Callable[[Config], int], start.run)
    return run(cfg)


def _db_error(e: DBAPIError) -> str:
    # Only the driver's own message: SQLAlchemy's text adds the SQL and its parameters,
    # which may contain password hashes.
    text = str(e.orig).strip().splitlines()
    return f"database error: {text[0] if text else type(e.orig).__name__}"


def _run(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help, --version (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    func: Callable[[argparse.Namespace, Config], int] = getattr(args, "func", cmd_serve)
    return func(args, hubconfig.load(args))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``himalia`` console script; returns the exit status."""
    try:
        return _run(argv)
    except CLIError as e:
        return _fail(str(e), e.code)
    except ConfigError as e:
        return _fail(str(e), 2)
    except (UserError, GroupError, RBACError, SchemaOutdated) as e:
        return _fail(str(e))
    except (OperationalError, IntegrityError) as e:
        return _fail(_db_error(e))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # e.g. `himalia users list | head -1`
        _silence_stdout()
        return 1


def _fail(message: str, code: int = 1) -> int:
    print(f"himalia: error: {message}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
