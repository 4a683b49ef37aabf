"""``himalia users add|list|remove|set-admin|passwd`` — manage accounts from the shell.

Each command is one transaction: adding or removing several users is all or nothing.
Passwords are read from stdin or a no-echo prompt and never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from hub.cli.common import (
    CLIError,
    Parser,
    add_db_arguments,
    confirm,
    open_database,
    read_new_password,
    require_password_auth,
)
from hub.config import Config, ConfigError
from hub.db.database import transaction
from hub.db.models import User, isoformat
from hub.services import accounts as unix_accounts
from hub.services import auth, first_admin
from hub.services import users as accounts


def add_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register ``users`` and its subcommands."""
    parser = commands.add_parser("users", help="Add, list, remove users; admin flag; passwords.")
    sub = parser.add_subparsers(dest="users_command", metavar="COMMAND", required=True)

    p = sub.add_parser("add", help="Create users (all or none).")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--admin", action="store_true", help="Make the new users admins.")
    p.add_argument("--password-stdin", action="store_true",
                   help="Read one password (one line) from stdin for all the new users; "
                        "without it, native accounts have no password until `users passwd`.")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("list", help="List users.")
    p.add_argument("--json", action="store_true", help="Print a JSON list instead of a table.")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("remove", help="Delete users with their tokens (all or none).")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--yes", "-y", action="store_true", help="Do not ask for confirmation.")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("set-admin", help="Grant or revoke admin rights.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("state", choices=("on", "off"))
    p.set_defaults(func=cmd_set_admin)

    p = sub.add_parser("passwd", help="Set a native user's password "
                                      "(from stdin, or prompted twice on a terminal).")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_passwd)

    for leaf in sub.choices.values():
        add_db_arguments(leaf)


def name_check(cfg: Config) -> accounts.NameCheck | None:
    """The account policy's name check, when the settings give a usable policy."""
    try:
        return unix_accounts.policy(cfg).check_name
    except ConfigError:
        return None  # e.g. accounts = "create" read by a non-root CLI: the hub checks at spawn


def cmd_add(args: argparse.Namespace, cfg: Config) -> int:
    """Create the named users, optionally admins, optionally with one password."""
    hashes: list[str | None] = [None] * len(args.names)
    if args.password_stdin:
        require_password_auth(cfg)
        password = read_new_password()
        # One salt per user; hashed before the transaction so no lock is held meanwhile.
        hashes = [auth.hash_password(password) for _ in args.names]
    with open_database(cfg) as db, transaction(db) as session:
        created = accounts.create_many(session, args.names, admin=args.admin,
                                       check=name_check(cfg))
        for user, hashed in zip(created, hashes, strict=True):
            user.password_hash = hashed
        names = [u.name for u in created]
    for name in names:
        print(f"added {'admin' if args.admin else 'user'} {name}")
    if not args.password_stdin and cfg.authenticator == "native":
        for name in names:
            print(f"note: {name} has no password yet; set one with `himalia users passwd "
                  f"{name}`", file=sys.stderr)
    return 0


def user_row(user: User) -> dict[str, Any]:
    """The ``users list`` record of one user."""
    return {
        "name": user.name,
        "admin": user.admin,
        "created": isoformat(user.created),
        "last_activity": isoformat(user.last_activity),
        "running": any(s.started is not None for s in user.servers),
    }


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    """Print every user, as a table or as JSON."""
    with open_database(cfg) as db, transaction(db) as session:
        query = select(User).options(selectinload(User.servers)).order_by(User.name)
        rows = [user_row(u) for u in session.scalars(query)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def _when(stamp: str | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromisoformat(stamp.rstrip("Z")).strftime("%Y-%m-%d %H:%M")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of ``users list`` records (times in UTC, to the minute)."""
    header = ("NAME", "ADMIN", "CREATED (UTC)", "LAST ACTIVITY", "RUNNING")
    lines = [header] + [
        (r["name"], "yes" if r["admin"] else "no", _when(r["created"]),
         _when(r["last_activity"]), "yes" if r["running"] else "no")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def cmd_remove(args: argparse.Namespace, cfg: Config) -> int:
    """Delete users (with their tokens and sessions) whose servers are stopped."""
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError("not removing without confirmation: pass --yes", code=2)
        if not confirm(f"Remove {', '.join(args.names)} and their tokens?"):
            raise CLIError("not confirmed: nothing removed")
    with open_database(cfg) as db, transaction(db) as session:
        targets = [accounts.require(session, name) for name in args.names]
        for user in targets:
            if any(s.started is not None for s in user.servers):
                raise CLIError(f"{user.name} has a running server: stop it first "
                               "(from the hub's home page or the REST API)")
        removed = sorted({u.name: u for u in targets}.items())
        for _name, user in removed:
            accounts.delete(session, user)
    for name, _user in removed:
        print(f"removed user {name}")
    return 0


def cmd_set_admin(args: argparse.Namespace, cfg: Config) -> int:
    """Turn a user's admin flag on or off."""
    with open_database(cfg) as db, transaction(db) as session:
        user = accounts.require(session, args.name)
        user.admin = args.state == "on"
        name = user.name
    print(f"{name} is {'now' if args.state == 'on' else 'no longer'} an admin")
    return 0


def cmd_passwd(args: argparse.Namespace, cfg: Config) -> int:
    """Set a user's password; the user must exist before we ask for it."""
    require_password_auth(cfg)
    with open_database(cfg) as db:
        with transaction(db) as session:
            accounts.require(session, args.name)
        # No transaction is open while we wait for a person to type.
        hashed = auth.hash_password(read_new_password())
        with transaction(db) as session:
            user = accounts.require(session, args.name)
            user.password_hash = hashed
            name = user.name
            pruned = first_admin.prune(cfg, session)
    print(f"password of {name} changed")
    if pruned:
        print(f"removed {first_admin.path(cfg)}: it no longer holds the admin's password")
    return 0
