"""The first admin's password file: written once, removed as soon as it stops being true.

On an empty database the hub creates ``admin`` with a random password and prints it once. With
``admin_password_file`` on (the default) it is also saved 0600 in ``<data_dir>/admin-password``
so an operator who missed the output can read it. A password left in a file is a liability, so
the file goes as soon as the password changes (``himalia users passwd admin``), checked when
the password is set and again at every hub start.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy.orm import Session

from hub.config import Config
from hub.secrets_store import write_private
from hub.services import auth, users

FILE_NAME = "admin-password"
USERNAME = "admin"


def path(cfg: Config) -> Path:
    """Where the password is saved."""
    return cfg.data_path / FILE_NAME


def save(cfg: Config, password: str) -> Path | None:
    """Save ``password`` if the settings ask for it; returns the file, or None."""
    if not cfg.admin_password_file:
        return None
    write_private(path(cfg), password + "\n")
    return path(cfg)


def prune(cfg: Config, session: Session) -> bool:
    """Remove the file unless it still holds the admin's current password; True if removed."""
    file = path(cfg)
    try:
        saved = file.read_text().strip()
    except FileNotFoundError:
        return False
    user = users.get(session, USERNAME)
    if cfg.admin_password_file and user is not None and \
            auth.check_password(saved, user.password_hash):
        return False
    with contextlib.suppress(FileNotFoundError):
        file.unlink()
    return True
