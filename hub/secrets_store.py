"""Secret files in the data directory: created private, refused when readable by others."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
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
    """Write ``text`` to ``path``, readable by our user only (0600), atomically: a reader sees
    the old content or the new, never part of it, and a crash leaves no partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp made it 0600
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
