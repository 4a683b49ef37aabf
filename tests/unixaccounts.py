"""Real Unix accounts for the isolation tests: made with ``useradd``, removed after.

Tests that need ordinary accounts (alice, bob) create them here under a prefix unique to the
test, and remove them (with their homes) afterwards; accounts the hub itself creates in
``accounts = "create"`` mode use the same prefix, so the same cleanup removes those too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SINGLEUSER_ROOT_REASON = "per-user accounts need root (useradd, setpriv)"


def require_root() -> None:
    """Skip unless root (CI runs as root; a developer's non-root run skips these)."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip(SINGLEUSER_ROOT_REASON)


def unique_prefix() -> str:
    """An account-name prefix no other test (or person) uses: ``hx<8 hex>-``."""
    return f"hx{uuid.uuid4().hex[:8]}-"


def add(name: str, private_home: bool = True) -> pwd.struct_passwd:
    """Create the account ``name`` with a home (0700 unless asked otherwise)."""
    subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
                   check=True, capture_output=True, timeout=30)
    entry = pwd.getpwnam(name)
    if private_home:
        os.chmod(entry.pw_dir, 0o700)
    return entry


def remove_with_prefix(prefix: str) -> list[str]:
    """Delete every account whose name starts with ``prefix``, homes included."""
    removed = []
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            subprocess.run(["userdel", "--remove", "--force", entry.pw_name],
                           capture_output=True, timeout=30)
            if os.path.isdir(entry.pw_dir) and entry.pw_dir.startswith("/home/"):
                shutil.rmtree(entry.pw_dir, ignore_errors=True)
            removed.append(entry.pw_name)
    return removed


@contextmanager
def accounts(*names: str) -> Iterator[tuple[str, list[pwd.struct_passwd]]]:
    """``(prefix, entries)`` of fresh accounts ``<prefix><name>``; all removed after."""
    require_root()
    prefix = unique_prefix()
    try:
        yield prefix, [add(prefix + n) for n in names]
    finally:
        remove_with_prefix(prefix)


def world_dir(prefix: str = "himalia-test-") -> Path:
    """A directory (0755) under /tmp that every account can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return path
