"""Start-up checks that the machine can keep users apart as the settings say.

Run once before the hub serves anything: the account policy must be usable (``setpriv``,
``useradd``, a valid prefix), configured limits must be enforceable (the hub refuses to start
rather than run without them), and everything the hub writes is private to its account
(``umask 077``: database, secrets, ``proxy.json``, the route journal, logs).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hub.config import Config, ConfigError
from hub.services import accounts, cgroups

log = logging.getLogger(__name__)

SHARED_ACCOUNT_WARNING = (
    "accounts = 'hub': every user's server runs as the hub's own account (uid %d), so users "
    "can read each other's files; run the hub as root for per-user accounts"
)


def check(cfg: Config) -> accounts.AccountPolicy:
    """The account policy, after checking the settings work here; raises ConfigError."""
    pol = accounts.policy(cfg)
    try:
        problems = accounts.startup_problems(cfg)
    except accounts.AccountError as e:
        raise ConfigError(f"account_prefix {cfg.account_prefix!r} cannot form account "
                          f"names: {e}") from None
    manager = cgroups.manager(cfg)
    if manager is not None and (problem := manager.problem()):
        problems.append(f"mem_limit/cpu_limit are set but cannot be enforced: {problem}")
    if problems:
        raise ConfigError("; ".join(problems))
    if pol.switches:
        log.info("each user's server runs as its own Unix account (accounts = %r)", pol.mode)
    else:
        log.warning(SHARED_ACCOUNT_WARNING, os.getuid())
    return pol


def make_private(cfg: Config) -> None:
    """``umask 077`` for the hub (and the proxy it starts); tighten existing database files."""
    os.umask(0o077)
    url = cfg.database_url
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if f.exists() and f.stat().st_uid == os.getuid():
                f.chmod(0o600)
