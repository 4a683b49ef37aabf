"""Per-server memory and CPU limits with the kernel's cgroups (v2, or the v1 controllers).

Each server with limits gets a group of its own: ``<cgroup_root>/himalia/<dir>`` on v2, or
``<cgroup_root>/memory/himalia/<dir>`` and ``<cgroup_root>/cpu/himalia/<dir>`` on v1. The
groups live beside the hub's (not inside it), so that stopping the hub's service leaves users'
servers alone, as it does without limits. The server's first process joins its groups before it
execs anything (see :mod:`hub.services.local_spawner`), so every child — kernels, terminals —
is counted and limited. When the server stops, whatever is left in its groups is killed and the
groups are removed.

``mem_limit`` also caps swap, so a server cannot dodge its limit by swapping. A server that goes
over it has a process killed by the kernel (the largest: usually a kernel); :meth:`Group.oom_kills`
counts those kills so the hub can say why.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hub.config import Config, ConfigError

PARENT = "himalia"
CPU_PERIOD_US = 100_000
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class CgroupError(RuntimeError):
    """The limits cannot be enforced here (the message says why)."""


def parse_size(text: str) -> int:
    """Bytes in ``512M``, ``2G``, ``1.5GiB`` or ``1048576`` (units are powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M or 2G)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < 16 << 20:
        raise ValueError(f"{text!r} is too small for a server (at least 16M)")
    return value


def human_size(n: int) -> str:
    """``536870912`` → ``512 MiB``."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Limits:
    """What each server may use; None means no limit."""

    mem_bytes: int | None = None
    cpus: float | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Limits:
        try:
            mem = parse_size(cfg.mem_limit) if cfg.mem_limit else None
        except ValueError as e:
            raise ConfigError(f"mem_limit: {e}") from None
        if cfg.cpu_limit < 0:
            raise ConfigError(f"cpu_limit must be positive, got {cfg.cpu_limit}")
        return cls(mem, cfg.cpu_limit or None)

    def __bool__(self) -> bool:
        return self.mem_bytes is not None or self.cpus is not None


@dataclass(frozen=True)
class Group:
    """One server's cgroup directories (one on v2, one per controller on v1)."""

    dirs: tuple[Path, ...]
    version: int

    def procs_files(self) -> list[str]:
        """The files a process writes its PID to, to join."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return out

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this group for going over its memory."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for d in self.dirs:
            try:
                text = (d / name).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        return 0

    def kill_all(self) -> None:
        """SIGKILL everything still in the group (all of it belongs to this one server)."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = 2.0) -> None:
        """Kill what is left, then remove the directories (a group must be empty to go)."""
        deadline = time.monotonic() + timeout
        for d in self.dirs:
            while d.exists():
                self.kill_all()
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)


class Cgroups:
    """Makes and finds servers' groups under ``root`` (v2 when ``root`` is a unified mount)."""

    def __init__(self, root: str, limits: Limits) -> None:
        self.root = Path(root)
        self.limits = limits
        self.version = 2 if (self.root / "cgroup.controllers").exists() else 1

    def _parents(self) -> list[tuple[str, Path]]:
        if self.version == 2:
            return [("", self.root / PARENT)]
        out = []
        if self.limits.mem_bytes is not None:
            out.append(("memory", self.root / "memory" / PARENT))
        if self.limits.cpus is not None:
            out.append(("cpu", self.root / "cpu" / PARENT))
        return out

    def group(self, name: str) -> Group:
        """The (possibly not yet created) group of the server whose directory name is ``name``."""
        return Group(tuple(parent / name for _, parent in self._parents()), self.version)

    def create(self, name: str) -> Group:
        """Make the server's group with the limits written; raises :class:`CgroupError`."""
        group = self.group(name)
        try:
            if self.version == 2:
                self._enable_v2_controllers()
            for d in group.dirs:
                d.parent.mkdir(exist_ok=True)
                d.mkdir(exist_ok=True)
            self._write_limits(group)
        except OSError as e:
            group.remove()
            raise CgroupError(f"cannot set up cgroup {group.dirs[0]}: {e.strerror}") from None
        return group

    def _enable_v2_controllers(self) -> None:
        wanted = [c for c, on in (("memory", self.limits.mem_bytes), ("cpu", self.limits.cpus))
                  if on is not None]
        parent = self.root / PARENT
        parent.mkdir(exist_ok=True)
        for d in (self.root, parent):
            enabled = (d / "cgroup.subtree_control").read_text().split()
            missing = [f"+{c}" for c in wanted if c not in enabled]
            if missing:
                (d / "cgroup.subtree_control").write_text(" ".join(missing))

    def _write_limits(self, group: Group) -> None:
        mem, cpus = self.limits.mem_bytes, self.limits.cpus
        for d in group.dirs:
            if self.version == 2:
                if mem is not None:
                    (d / "memory.max").write_text(str(mem))
                    with contextlib.suppress(FileNotFoundError):
                        (d / "memory.swap.max").write_text("0")
                if cpus is not None:
                    (d / "cpu.max").write_text(f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
            elif d.parent.parent.name == "memory" and mem is not None:
                (d / "memory.limit_in_bytes").write_text(str(mem))
                # memsw (memory + swap) exists only with swap accounting on.
                with contextlib.suppress(FileNotFoundError):
                    (d / "memory.memsw.limit_in_bytes").write_text(str(mem))
            elif cpus is not None:
                (d / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (d / "cpu.cfs_quota_us").write_text(str(int(cpus * CPU_PERIOD_US)))

    def problem(self) -> str | None:
        """Why limits cannot be enforced here, found by making a probe group; None if they can."""
        if not self.limits:
            return None
        if os.geteuid() != 0:
            return "limits need the hub to run as root (to create cgroups)"
        for controller, parent in self._parents():
            if controller and not parent.parent.is_dir():
                return f"the cgroup v1 {controller} controller is not mounted at {parent.parent}"
        probe = f".probe-{os.getpid()}"
        try:
            self.create(probe).remove()
        except CgroupError as e:
            return str(e)
        return None


def manager(cfg: Config) -> Cgroups | None:
    """The cgroup manager when limits are configured, else None."""
    limits = Limits.from_config(cfg)
    return Cgroups(cfg.cgroup_root, limits) if limits else None
