"""The routes file (``--routes-file``): an append-only journal of route changes.

Format: UTF-8 JSON lines. The first line is ``{"himalia-routes": 1}``; then one record per
change, ``{"add": "/user/alice", "data": {"target": ..., ...}}`` or
``{"del": "/user/alice"}``. Replaying the records in order gives the table.

Durability: every change is written with one ``write(2)`` before the API answers, so it
survives ``kill -9`` of the proxy (the data is in the kernel's page cache). ``fsync`` — needed
only against power loss — is batched: at most one every ``sync_delay`` seconds, run in a worker
thread on a duplicate descriptor so that a slow disk never stalls traffic. 10,000 adds cost
10,000 small writes and a handful of fsyncs.

Compaction: on load the file is rewritten with one ``add`` per live route (which also drops a
line torn by a crash mid-write), and again whenever it holds more than twice as many records
as live routes (plus 1,024). The new file is written beside the old one, fsynced and renamed
over it, so a crash leaves either the old or the new file, never a mix.

A lock file (``<path>.lock``, ``flock``) keeps two proxies from sharing one journal; the
kernel drops it when the process dies, even by ``kill -9``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["JournalError", "RouteJournal"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_HEADER = json.dumps({"himalia-routes": FORMAT_VERSION}).encode() + b"\n"
_COMPACT_SLACK = 1024


class JournalError(RuntimeError):
    """The routes file cannot be used (locked by another proxy, unknown format, unreadable)."""


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(record: dict[str, Any]) -> bytes:
    return _ENCODER.encode(record).encode() + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RouteJournal:
    """Persist route changes to one file and replay them at start.

    Use: ``routes = journal.load()`` once, then :meth:`record_add` / :meth:`record_delete`
    for every change, :meth:`close` at exit. Write errors raise ``OSError`` to the caller.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync_delay: float = 0.2) -> None:
        self.path = Path(path)
        self._sync_delay = sync_delay
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._live: dict[str, dict[str, Any]] = {}
        self._records = 0
        self._dirty = False
        self._sync_handle: asyncio.TimerHandle | None = None
        self._last_sync = 0.0

    # -- start-up

    def load(self) -> dict[str, dict[str, Any]]:
        """Lock the file, replay it, rewrite it compacted; return ``{key: data}``."""
        self._lock()
        if self.path.exists():
            self._live = self._replay(self.path.read_bytes())
        self._compact()
        return dict(self._live)

    def _lock(self) -> None:
        lock_path = f"{self.path}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(f"{self.path} is in use by another proxy") from None
        self._lock_fd = fd

    def _replay(self, raw: bytes) -> dict[str, dict[str, Any]]:
        routes: dict[str, dict[str, Any]] = {}
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._apply(routes, record)
            except (ValueError, TypeError, KeyError) as exc:
                torn = number >= len(lines) - 1
                log.warning(
                    "%s line %d: %s record skipped (%s)",
                    self.path, number, "torn" if torn else "invalid", exc,
                )
        return routes

    @staticmethod
    def _apply(routes: dict[str, dict[str, Any]], record: Any) -> None:
        if not isinstance(record, dict):
            raise TypeError("record is not an object")
        if "himalia-routes" in record:
            if record["himalia-routes"] != FORMAT_VERSION:
                raise JournalError(f"unknown routes file version {record['himalia-routes']!r}")
        elif "add" in record:
            if not isinstance(record["data"], dict):
                raise TypeError("route data is not an object")
            routes[str(record["add"])] = record["data"]
        elif "del" in record:
            routes.pop(str(record["del"]), None)
        else:
            raise KeyError("neither add nor del")

    # -- changes

    def record_add(self, key: str, data: Mapping[str, Any]) -> None:
        """Append an ``add`` record (replacing any route under ``key``)."""
        self._write(_dumps({"add": key, "data": dict(data)}))
        self._live[key] = dict(data)
        self._after_write()

    def record_delete(self, key: str) -> None:
        """Append a ``del`` record."""
        self._write(_dumps({"del": key}))
        self._live.pop(key, None)
        self._after_write()

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            raise JournalError("routes file is not open")
        _write_all(self._fd, line)

    def _after_write(self) -> None:
        self._records += 1
        self._dirty = True
        if self._records > 2 * len(self._live) + _COMPACT_SLACK:
            self._compact()
        else:
            self._schedule_sync()

    # -- durability

    def _schedule_sync(self) -> None:
        if self._sync_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used without an event loop: sync at most every sync_delay
            if time.monotonic() - self._last_sync > self._sync_delay:
                self.sync()
            return
        self._sync_handle = loop.call_later(self._sync_delay, self._background_sync, loop)

    def _background_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sync_handle = None
        if self._fd is None or not self._dirty:
            return
        self._dirty = False
        loop.run_in_executor(None, _fsync_and_close, os.dup(self._fd))

    def sync(self) -> None:
        """fsync now, in the calling thread."""
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
            self._last_sync = time.monotonic()

    def _compact(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = [_HEADER] + [_dumps({"add": k, "data": v}) for k, v in self._live.items()]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b"".join(payload))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fsync_dir()
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._records = len(self._live)
        self._dirty = False

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        """fsync pending records and release the file and its lock."""
        if self._sync_handle is not None:
            self._sync_handle.cancel()
            self._sync_handle = None
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
