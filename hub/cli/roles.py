"""``himalia roles list|add|remove|grant|revoke`` — custom roles and who holds them.

A role bundles scopes (``himalia roles add teaching --scopes read:users!group=class,...``) and
is granted to users and groups. Changes apply to the running hub at once (scopes are resolved
per request). Roles listed in the ``roles`` setting are reset to it at the next hub start;
the built-in roles (admin, user, server, token) cannot be added, removed or granted here:
admin rights come from ``himalia users set-admin``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy import select

from hub.cli.common import CLIError, Parser, add_db_arguments, confirm, open_database, scope_list
from hub.config import Config
from hub.db.database import transaction
from hub.db.models import Group, Role, User
from hub.services import groups as grp
from hub.services import rbac
from hub.services import scopes as sc
from hub.services import users as accounts


def add_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register ``roles`` and its subcommands."""
    parser = commands.add_parser("roles", help="List, add, remove, grant and revoke roles.")
    sub = parser.add_subparsers(dest="roles_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="List roles (built-in ones too) with their holders.")
    p.add_argument("--json", action="store_true", help="Print a JSON list instead of text.")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("add", help="Create a custom role.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--scopes", type=scope_list, required=True, metavar="A,B",
                   help="Comma-separated scopes, filters allowed (read:users!group=class).")
    p.add_argument("--description", default="", help="What the role is for.")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("remove", help="Delete a custom role (its holders lose it).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--yes", "-y", action="store_true", help="Do not ask for confirmation.")
    p.set_defaults(func=cmd_remove)

    for verb, func, text in (("grant", cmd_grant, "Give a role to users and groups."),
                             ("revoke", cmd_revoke, "Take a role from users and groups.")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("--user", action="append", default=[], metavar="USER",
                       help="A user (repeat for several).")
        p.add_argument("--group", action="append", default=[], metavar="GROUP",
                       help="A group (repeat for several).")
        p.set_defaults(func=func)

    for leaf in sub.choices.values():
        add_db_arguments(leaf)


def _rows(session: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"name": name, "builtin": True, "description": "", "scopes": list(scopes),
         "users": [], "groups": []}
        for name, scopes in sc.BUILTIN_ROLES.items()
    ]
    for role in session.scalars(select(Role).order_by(Role.name)):
        members, teams = rbac.holders(session, role)
        out.append({"name": role.name, "builtin": False, "description": role.description,
                    "scopes": list(role.scopes or []), "users": [u.name for u in members],
                    "groups": [g.name for g in teams]})
    return out


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    """Print every role: scopes and holders."""
    with open_database(cfg) as db, transaction(db) as session:
        rows = _rows(session)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        kind = " (built-in)" if row["builtin"] else ""
        print(f"{row['name']}{kind}: {', '.join(row['scopes']) or '(no scopes)'}")
        if row["description"]:
            print(f"  {row['description']}")
        if row["users"] or row["groups"]:
            print(f"  users: {', '.join(row['users']) or '-'}; "
                  f"groups: {', '.join(row['groups']) or '-'}")
    return 0


def cmd_add(args: argparse.Namespace, cfg: Config) -> int:
    """Create a custom role with its scopes."""
    with open_database(cfg) as db, transaction(db) as session:
        try:
            rbac.create_role(session, args.name, args.scopes, args.description)
        except rbac.RBACError as e:
            raise CLIError(str(e)) from None
    print(f"added role {args.name}: {', '.join(args.scopes)}")
    return 0


def cmd_remove(args: argparse.Namespace, cfg: Config) -> int:
    """Delete a custom role."""
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError("not removing without confirmation: pass --yes", code=2)
        if not confirm(f"Remove the role {args.name}? Its holders lose its scopes."):
            raise CLIError("not confirmed: nothing removed")
    with open_database(cfg) as db, transaction(db) as session:
        session.delete(_role(session, args.name))
    print(f"removed role {args.name}")
    return 0


def _role(session: Any, name: str) -> Role:
    if name in sc.BUILTIN_ROLES:
        raise CLIError(f"{name} is a built-in role: it cannot be changed here"
                       + (" (use `himalia users set-admin`)" if name == "admin" else ""))
    try:
        return rbac.require_role(session, name)
    except rbac.RBACError as e:
        raise CLIError(str(e)) from None


def _holders(session: Any, args: argparse.Namespace) -> tuple[list[User], list[Group]]:
    if not args.user and not args.group:
        raise CLIError("name at least one --user or --group", code=2)
    members = [accounts.require(session, n) for n in args.user]
    try:
        teams = [grp.require(session, n) for n in args.group]
    except grp.GroupError as e:
        raise CLIError(str(e)) from None
    return members, teams


def _describe(members: list[User], teams: list[Group]) -> str:
    return ", ".join([*(f"user {u.name}" for u in members), *(f"group {g.name}" for g in teams)])


def cmd_grant(args: argparse.Namespace, cfg: Config) -> int:
    """Give a role to the named users and groups."""
    with open_database(cfg) as db, transaction(db) as session:
        role = _role(session, args.name)
        members, teams = _holders(session, args)
        rbac.grant(role, members, teams)
        done = _describe(members, teams)
    print(f"granted role {args.name} to {done}")
    return 0


def cmd_revoke(args: argparse.Namespace, cfg: Config) -> int:
    """Take a role from the named users and groups."""
    with open_database(cfg) as db, transaction(db) as session:
        role = _role(session, args.name)
        members, teams = _holders(session, args)
        rbac.revoke(role, members, teams)
        done = _describe(members, teams)
    print(f"revoked role {args.name} from {done}")
    return 0
