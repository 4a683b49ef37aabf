"""Process identity from ``/proc``: a PID *plus* its start time names one process for good.

PIDs are recycled, so a stored PID alone may later name an unrelated process. Linux records,
in field 22 of ``/proc/<pid>/stat``, when each process started (clock ticks since boot); the pair
``(pid, start_time)`` therefore never matches a different process. Every check the hub makes on a
process it did not just create (after a hub restart, say) goes through :func:`is_alive` or
:func:`matches`, and a process that exited but was not yet reaped (a zombie) counts as dead.

Servers of other accounts (a hub running as root) are also pinned to their owner's uid: the
functions that check an identity take an optional ``uid``, and a process of another uid is never
taken for the stored one, so it is never signalled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the hub needs."""

    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), T, t, I ...
    ppid: int
    pgid: int
    start_time: int  # clock ticks after boot

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when there is no such process."""
    if pid <= 0:
        return None
    try:
        raw = (PROC / str(pid) / "stat").read_bytes().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) is parenthesised and may itself contain spaces and ")": split after
    # the *last* ")". What follows starts with field 3 (state).
    rest = raw[raw.rfind(")") + 2 :].split()
    try:
        return ProcStat(pid=pid, state=rest[0], ppid=int(rest[1]), pgid=int(rest[2]),
                        start_time=int(rest[19]))
    except (IndexError, ValueError):
        return None


def owner(pid: int) -> int | None:
    """The real uid of process ``pid`` (from ``/proc/<pid>/status``), or None."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return None


def _same(stat: ProcStat | None, started: int | None, uid: int | None) -> bool:
    """Whether ``stat`` is the process that started at ``started`` (owned by ``uid`` if given)."""
    if stat is None or started is None or stat.start_time != started:
        return False
    return uid is None or owner(stat.pid) == uid


def boot_id() -> str:
    """This boot's random id: start times count from boot, so a saved identity is only
    comparable within the same boot (empty string if the kernel does not say)."""
    try:
        return (PROC / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (field 22, ticks after boot), or None if it does not exist."""
    stat = read_stat(pid)
    return stat.start_time if stat else None


def matches(pid: int, started: int | None, uid: int | None = None) -> bool:
    """Whether ``pid`` currently names the process that started at ``started`` (zombie or not)."""
    return _same(read_stat(pid), started, uid)


def is_alive(pid: int, started: int | None, uid: int | None = None) -> bool:
    """Whether the process ``(pid, started)`` exists and has not exited (zombies are dead)."""
    stat = read_stat(pid)
    return _same(stat, started, uid) and stat is not None and not stat.zombie


def reap(pid: int) -> int | None:
    """Collect ``pid`` if it is an exited child of ours: its exit status, else None.

    Only call this after :func:`matches` confirmed the identity; for a process that is not our
    child (the usual case after a hub restart) it does nothing.
    """
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def signal_group(pid: int, started: int | None, sig: int, uid: int | None = None) -> bool:
    """Send ``sig`` to the process group led by ``(pid, started)``, if that leader still exists.

    The identity check comes first so that a recycled PID's group is never signalled.
    Returns whether a signal was sent.
    """
    if not matches(pid, started, uid):
        return False
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        # Not a group leader after all, or the group holds a process we may not signal:
        # the leader itself is ours, so signal it alone.
        pass
    try:
        os.kill(pid, sig)
    except OSError:
        return False
    return True


Reaper = Callable[[int], object]


def popen_reaper(proc: subprocess.Popen[Any] | None) -> Reaper:
    """A reaper that collects ``proc`` through its ``Popen`` (which then keeps the exit status
    for ``poll()``), and any other PID with :func:`reap`."""

    def collect(pid: int) -> int | None:
        if proc is not None and proc.pid == pid:
            return proc.poll()
        return reap(pid)

    return collect


async def terminate(pid: int, started: int | None, timeout: float, grace: float = 3.0,
                    reaper: Reaper = reap, uid: int | None = None) -> bool:
    """SIGTERM the group led by ``(pid, started)``, wait up to ``timeout``, then SIGKILL.

    Returns True when the process is gone (or never was), False if it survived even SIGKILL
    for ``grace`` seconds (e.g. stuck in uninterruptible I/O). ``reaper`` collects our own
    exited child (pass ``Popen.poll`` semantics to keep its exit status in the Popen).
    """
    if not signal_group(pid, started, signal.SIGTERM, uid):
        return await wait_gone(pid, started, 0, reaper, uid)  # reaps an exited child
    if await wait_gone(pid, started, timeout, reaper, uid):
        return True
    signal_group(pid, started, signal.SIGKILL, uid)
    return await wait_gone(pid, started, grace, reaper, uid)


async def wait_gone(pid: int, started: int | None, timeout: float, reaper: Reaper = reap,
                    uid: int | None = None) -> bool:
    """Wait until ``(pid, started)`` is dead (reaping it if it is our child); True if it is."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        # One reading per round: reaping and the verdict must see the same state, or a process
        # that exits in between would be judged dead but left unreaped (a zombie child).
        stat = read_stat(pid)
        if stat is None or not _same(stat, started, uid):
            return True
        if stat.zombie:
            if stat.ppid != os.getpid() or reaper(pid) is not None:
                return True  # someone else's zombie to collect, or collected now
            # Our child, but not reapable yet: a zombie group leader stays so until its other
            # threads have exited. Dead all the same; wait a moment to collect it.
            if time.monotonic() >= deadline + 1.0:
                return True
        elif time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
