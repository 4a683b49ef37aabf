"""Secret files in the data directory: created private, refused when readable by others."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class InsecureSecretFile(RuntimeError):
    """A secret file is readable by group or others."""


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def read_or_create(path: Path, nbytes: int = 32) -> bytes:
    """The secret in ``path`` (hex), creating it 0600 if absent; refuses an exposed file."""
    if path.exists():
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InsecureSecretFile(
                f"{path} is readable by other users (mode {stat.filemode(mode)}); "
                f"run `chmod 600 {path}`"
            )
        data = path.read_text().strip()
        if data:
            return bytes.fromhex(data)
    value = secrets.token_bytes(nbytes)
    write_private(path, value.hex() + "\n")
    return value


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new 0600 file (atomically replacing any old one)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
