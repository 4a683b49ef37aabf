"""Which Unix account runs a user's server: the ``accounts`` setting, account lookup and creation.

Three policies, one per value of ``accounts`` (``auto`` picks ``create`` when the hub runs as
root, ``hub`` otherwise):

- ``hub``: every server runs as the hub's own account (the only choice without root). Servers
  then share one uid and can read each other's files and the hub's; the hub says so at start-up.
- ``existing``: hub user ``alice`` runs as the existing account ``alice`` (PAM, LDAP or HPC
  sites, where the accounts are managed elsewhere). A missing account is a clear spawn error.
- ``create``: hub user ``alice`` runs as ``<account_prefix>alice`` (default ``jupyter-alice``),
  made with ``useradd`` on first spawn, with a private (0700) home under ``account_home_root``.

A policy checks names when users are created (:meth:`AccountPolicy.check_name`: a name that
cannot become a Unix account name is refused with a message, before anything is stored) and
resolves the account when a server starts (:meth:`AccountPolicy.ensure`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from hub.config import Config, ConfigError

log = logging.getLogger(__name__)

#: Portable account names (what ``useradd`` accepts everywhere): lower case, digits, ``_``,
#: ``-`` and ``.``, not starting with ``-`` or ``.``, at most 32 characters.
UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_.-]*$")
UNIX_NAME_MAX = 32
MODES = ("auto", "create", "existing", "hub")


#: Where system tools live even when the hub's ``PATH`` lacks them (a root service's, say).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def system_command(name: str) -> str | None:
    """The absolute path of ``useradd``, ``setpriv`` ...: on ``PATH``, else in the system dirs."""
    return shutil.which(name) or shutil.which(name, path=SYSTEM_PATH)


class AccountError(ValueError):
    """A name cannot map to an account, or the account cannot be used (safe to show)."""


@dataclass(frozen=True)
class Account:
    """A Unix account a server runs as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[int, ...]

    @classmethod
    def from_pwd(cls, entry: pwd.struct_passwd) -> Account:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir,
                   entry.pw_shell or "/bin/sh", groups)

    @classmethod
    def current(cls) -> Account:
        """The hub's own account."""
        return cls.from_pwd(pwd.getpwuid(os.getuid()))


class AccountPolicy:
    """Maps hub usernames to accounts. Subclasses override :meth:`account_name` and
    :meth:`ensure`; ``switches`` says whether servers run under another uid than the hub's."""

    mode = "hub"
    switches = False

    def account_name(self, user: str) -> str:
        """The account name for hub user ``user``."""
        return Account.current().name

    def check_name(self, user: str) -> None:
        """Raise :class:`AccountError` if ``user`` cannot have an account (at user creation)."""

    def check_rename(self, new_name: str) -> None:
        """Raise :class:`AccountError` if users may not be renamed (to ``new_name``)."""
        if self.switches:
            raise AccountError("users cannot be renamed while each has a Unix account of "
                               "their own: the account and its files would not follow")

    async def ensure(self, user: str) -> Account:
        """The account to run ``user``'s server as, creating it if the policy does."""
        return Account.current()


class HubAccount(AccountPolicy):
    """Every server runs as the hub's own account."""


class ExistingAccounts(AccountPolicy):
    """Hub user ``alice`` runs as the existing account ``alice``."""

    mode = "existing"
    switches = True

    def account_name(self, user: str) -> str:
        return user

    def check_name(self, user: str) -> None:
        check_unix_name(self.account_name(user), user)

    async def ensure(self, user: str) -> Account:
        name = self.account_name(user)
        check_unix_name(name, user)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise AccountError(f"there is no Unix account {name!r} on this machine; "
                               "ask an administrator to create it") from None
        return refuse_privileged(Account.from_pwd(entry))


class CreatedAccounts(ExistingAccounts):
    """Hub user ``alice`` runs as ``<prefix>alice``, created on first spawn."""

    mode = "create"

    def __init__(self, prefix: str, home_root: str, shell: str) -> None:
        self.prefix = prefix
        self.home_root = home_root
        self.shell = shell

    def account_name(self, user: str) -> str:
        return self.prefix + user

    async def ensure(self, user: str) -> Account:
        name = self.account_name(user)
        check_unix_name(name, user)
        async with _USERADD_LOCK:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                entry = await self._create(name, user)
        return refuse_privileged(Account.from_pwd(entry))

    async def _create(self, name: str, user: str) -> pwd.struct_passwd:
        home = str(Path(self.home_root) / name)
        argv = [system_command("useradd") or "useradd", "--create-home", "--home-dir", home,
                "--shell", self.shell, "--user-group",
                "--comment", f"Himalia user {user}"[:64], name]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            log.error("useradd %s failed (%s): %s", name, proc.returncode,
                      out.decode(errors="replace").strip())
            raise AccountError(f"the account {name!r} could not be created")
        entry = pwd.getpwnam(name)
        # Debian's useradd makes 0755 homes: private files must not be readable by others.
        os.chmod(entry.pw_dir, 0o700)
        log.info("created Unix account %s (uid %d) for hub user %r", name, entry.pw_uid, user)
        return entry


# useradd locks /etc/passwd and fails (rather than waits) when another useradd holds it; and
# two first spawns of one user (default and named server) must not both try to create it.
_USERADD_LOCK = asyncio.Lock()


def check_unix_name(name: str, user: str) -> None:
    """Raise :class:`AccountError` unless ``name`` is a portable Unix account name."""
    if len(name) > UNIX_NAME_MAX or not UNIX_NAME.match(name) or name.isdigit():
        raise AccountError(
            f"username {user!r} cannot be used: its Unix account name {name!r} must be at most "
            f"{UNIX_NAME_MAX} characters of a-z, 0-9, '_', '-' and '.', not starting with '-' "
            "or '.'")


def refuse_privileged(acct: Account) -> Account:
    """Never run a user's server as root (a hub user called ``root`` maps here, say)."""
    if acct.uid == 0 or acct.gid == 0:
        raise AccountError(f"servers never run as the privileged account {acct.name!r}")
    return acct


def resolve_mode(cfg: Config) -> str:
    """The effective mode: ``auto`` resolved; a switching mode without root is an error."""
    mode = cfg.accounts
    if mode not in MODES:
        raise ConfigError(f"accounts must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        return "create" if os.geteuid() == 0 else "hub"
    if mode != "hub" and os.geteuid() != 0:
        raise ConfigError(f"accounts = {mode!r} needs the hub to run as root "
                          "(to switch to each user's account); use accounts = 'hub'")
    return mode


def policy(cfg: Config) -> AccountPolicy:
    """The policy the settings ask for (raises :class:`ConfigError` on a bad setting)."""
    mode = resolve_mode(cfg)
    if mode == "create":
        return CreatedAccounts(cfg.account_prefix, cfg.account_home_root, cfg.account_shell)
    if mode == "existing":
        return ExistingAccounts()
    return HubAccount()


def startup_problems(cfg: Config) -> list[str]:
    """What stops the settings from working on this machine (empty when all is well)."""
    pol = policy(cfg)
    problems: list[str] = []
    if pol.switches and not system_command("setpriv"):
        problems.append("accounts needs the setpriv command (Debian's util-linux) on PATH")
    if pol.mode == "create" and not system_command("useradd"):
        problems.append("accounts = 'create' needs the useradd command (Debian's passwd)")
    if pol.mode == "create":
        check_unix_name(pol.account_name("a"), "a")  # a prefix that can never work
    return problems


# --- can another account run the single-user command? -----------------------------------------
def _allows(st: os.stat_result, acct: Account, bits: tuple[int, int, int]) -> bool:
    owner, group, other = bits
    if st.st_uid == acct.uid:
        return bool(st.st_mode & owner)
    if st.st_gid in acct.groups or st.st_gid == acct.gid:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


def access_problem(acct: Account, path: str) -> str | None:
    """Why ``acct`` cannot execute ``path`` (and its ``#!`` interpreter), or None if it can.

    Checks the real file and every directory on the way to it: a venv made from a Python
    under ``/root`` (mode 0700) is the usual trap.
    """
    x = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
    r = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    seen: set[str] = set()
    todo = [path]
    while todo:
        target = os.path.realpath(todo.pop())
        if target in seen:
            continue
        seen.add(target)
        for step in [*reversed(Path(target).parents), Path(target)]:
            try:
                st = os.stat(step)
            except OSError:
                return f"{step} does not exist"
            if not _allows(st, acct, x):
                what = "executable by" if step == Path(target) else "accessible to"
                return f"{step} is not {what} the account {acct.name}"
        interpreter = _shebang(target)
        if interpreter:
            if not _allows(st, acct, r):
                return f"{target} is not readable by the account {acct.name}"
            todo.append(interpreter)
    return None


def _shebang(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words else None
