"""``himalia groups list|add|remove|add-users|remove-users`` — manage groups from the shell.

Each command is one transaction (all or nothing). Members must be existing users. Groups and
members listed in the ``groups`` setting come back at the next hub start (it only adds).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from hub.cli.common import CLIError, Parser, add_db_arguments, confirm, open_database
from hub.config import Config
from hub.db.database import transaction
from hub.db.models import Group
from hub.services import groups as grp


def add_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register ``groups`` and its subcommands."""
    parser = commands.add_parser("groups", help="List, add, remove groups; their members.")
    sub = parser.add_subparsers(dest="groups_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="List groups with their members and roles.")
    p.add_argument("--json", action="store_true", help="Print a JSON list instead of text.")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("add", help="Create groups (all or none).")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--users", type=_names, default=[], metavar="A,B",
                   help="Comma-separated existing users to make members of each new group.")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("remove", help="Delete groups (members and roles stay).")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--yes", "-y", action="store_true", help="Do not ask for confirmation.")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("add-users", help="Add existing users to a group.")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("users", nargs="+", metavar="USER")
    p.set_defaults(func=cmd_add_users)

    p = sub.add_parser("remove-users", help="Remove users from a group.")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("users", nargs="+", metavar="USER")
    p.set_defaults(func=cmd_remove_users)

    for leaf in sub.choices.values():
        add_db_arguments(leaf)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _fail(e: grp.GroupError) -> CLIError:
    return CLIError(str(e))


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    """Print every group: name, members, roles (and properties with --json)."""
    with open_database(cfg) as db, transaction(db) as session:
        query = select(Group).options(selectinload(Group.users), selectinload(Group.roles))
        rows = [{"name": g.name, "users": sorted(u.name for u in g.users),
                 "roles": sorted(r.name for r in g.roles),
                 "properties": dict(g.properties or {})}
                for g in session.scalars(query.order_by(Group.name))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        roles = f"  [roles: {', '.join(row['roles'])}]" if row["roles"] else ""
        print(f"{row['name']}: {', '.join(row['users']) or '(no members)'}{roles}")
    return 0


def cmd_add(args: argparse.Namespace, cfg: Config) -> int:
    """Create the named groups, optionally with members."""
    with open_database(cfg) as db, transaction(db) as session:
        try:
            members = grp.find_users(session, args.users)
            created = [g.name for g in grp.create_many(session, args.names, members)]
        except grp.GroupError as e:
            raise _fail(e) from None
    for name in created:
        print(f"added group {name}")
    return 0


def cmd_remove(args: argparse.Namespace, cfg: Config) -> int:
    """Delete groups; their members lose the roles the groups gave them."""
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError("not removing without confirmation: pass --yes", code=2)
        if not confirm(f"Remove the groups {', '.join(args.names)}?"):
            raise CLIError("not confirmed: nothing removed")
    with open_database(cfg) as db, transaction(db) as session:
        try:
            targets = {g.name: g for g in (grp.require(session, n) for n in args.names)}
        except grp.GroupError as e:
            raise _fail(e) from None
        for group in targets.values():
            grp.delete(session, group)
    for name in sorted(targets):
        print(f"removed group {name}")
    return 0


def cmd_add_users(args: argparse.Namespace, cfg: Config) -> int:
    """Add members to a group (members already in it are fine)."""
    done = _change_members(args, cfg, grp.add_users)
    print(f"added {', '.join(done)} to group {args.group}")
    return 0


def cmd_remove_users(args: argparse.Namespace, cfg: Config) -> int:
    """Remove members from a group (users not in it are fine)."""
    done = _change_members(args, cfg, grp.remove_users)
    print(f"removed {', '.join(done)} from group {args.group}")
    return 0


def _change_members(args: argparse.Namespace, cfg: Config,
                    change: Callable[[Any, Any], None]) -> list[str]:
    """Apply ``change(group, members)``; returns the members' names."""
    with open_database(cfg) as db, transaction(db) as session:
        try:
            group = grp.require(session, args.group)
            members = grp.find_users(session, args.users)
        except grp.GroupError as e:
            raise _fail(e) from None
        change(group, members)
        return sorted(u.name for u in members)
