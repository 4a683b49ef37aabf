"""``LocalProcessSpawner``: each user server is a local process of the hub's own OS user.

The process runs in a session of its own (``start_new_session``), so stopping or restarting the
hub never stops it; a restarted hub finds it again from the saved ``{"pid", "start_time", ...}``
state. It works in a directory unique to its (user, server) under ``<data_dir>/users/``, writes
its output to a log file there (not a pipe: a pipe would break when the hub goes away), and
listens on a free port of 127.0.0.1.

Running each user as their own Unix account is a later variant: it overrides :meth:`account`,
:meth:`work_dir` and :meth:`popen_kwargs` (e.g. ``{"user": uid, "group": gid}``) and keeps the
rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from hub.services import procinfo
from hub.services.spawner import (
    ProgressEvent,
    Spawner,
    SpawnerError,
    passthrough_env,
    safe_dir_name,
)

log = logging.getLogger(__name__)

LOG_NAME = ".himalia-server.log"


def free_port(ip: str = "127.0.0.1") -> int:
    """An unused TCP port on ``ip`` (the server binds it right after; a race is very unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalProcessSpawner(Spawner):
    """Runs ``singleuser_cmd + singleuser_args`` as a local subprocess (see the module doc)."""

    ip = "127.0.0.1"
    #: Seconds between SIGTERM and SIGKILL.
    term_timeout = 10.0
    #: The same, for :meth:`stop` with ``now=True`` (a failed start, hub shutdown paths).
    term_timeout_now = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pid: int | None = None
        self.start_time: int | None = None
        self.port: int | None = None
        # Set only in the hub process that started the server: lets poll() reap the child and
        # report its real exit status. After a hub restart the server is not our child.
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = asyncio.Event()

    # --- hooks for a per-Unix-user variant -----------------------------------------------
    def account(self) -> pwd.struct_passwd:
        """The account the server runs as: here the hub's own."""
        return pwd.getpwuid(os.getuid())

    def work_dir(self) -> Path:
        """The server's working directory, unique per (user, server)."""
        return self.config.data_path / "users" / safe_dir_name(self.user, self.server)

    def popen_kwargs(self) -> dict[str, Any]:
        """Extra ``subprocess.Popen`` arguments (``user``, ``group``, ``extra_groups``...)."""
        return {}

    def command(self) -> list[str]:
        return [*self.config.singleuser_cmd, *self.config.singleuser_args]

    def get_env(self, port: int) -> dict[str, str]:
        """The complete environment: allow-listed hub variables, the account, the contract."""
        acct = self.account()
        env = passthrough_env(os.environ)
        env.update(USER=acct.pw_name, HOME=acct.pw_dir, SHELL=acct.pw_shell or "/bin/sh")
        env.update(self.contract_env(f"http://{self.ip}:{port}"))
        return env

    # --- the contract --------------------------------------------------------------------
    async def start(self) -> str:
        if self.pid is not None and await self.poll() is None:
            raise SpawnerError("the server is already running")
        cmd = self.command()
        if not cmd:
            raise SpawnerError("no single-user command is configured")
        port = free_port(self.ip)
        cwd = self.work_dir()
        cwd.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = self.get_env(port)
        # The log belongs to the server (its own file, 0600): the hub may restart meanwhile.
        log_fd = os.open(cwd / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_fd,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                **self.popen_kwargs(),
            )
        except OSError as e:
            log.error("cannot run %s for %r: %s", cmd[0], self, e)
            raise SpawnerError(f"the server command could not be run ({e.strerror})") from None
        finally:
            os.close(log_fd)
        self.proc = proc
        self.pid = proc.pid
        # A zombie keeps its /proc entry until reaped, so the start time is readable even if the
        # command exited at once.
        self.start_time = procinfo.start_time(proc.pid)
        self.port = port
        self._started.set()
        log.info("started %r: pid %d, port %d, in %s", self, proc.pid, port, cwd)
        return f"http://{self.ip}:{port}"

    async def poll(self) -> int | None:
        if self.pid is None:
            return 0
        if self.proc is not None and self.proc.pid == self.pid:
            return self.proc.poll()
        stat = procinfo.read_stat(self.pid)
        if stat is None or stat.start_time != self.start_time:
            return 1  # gone, or the PID now names another process
        if stat.zombie:
            status = procinfo.reap(self.pid)  # our child after all (e.g. a reloaded spawner)
            return 1 if status is None else status
        return None

    async def stop(self, now: bool = False) -> None:
        if self.pid is None:
            return
        timeout = self.term_timeout_now if now else self.term_timeout
        gone = await procinfo.terminate(self.pid, self.start_time, timeout, reaper=self._reap)
        if not gone:
            log.error("%r (pid %d) survived SIGKILL; giving up on it", self, self.pid)

    def _reap(self, pid: int) -> int | None:
        # Through the Popen when we have it, so that it keeps the exit status for poll().
        if self.proc is not None and self.proc.pid == pid:
            return self.proc.poll()
        return procinfo.reap(pid)

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        await self._started.wait()
        yield {"progress": 30, "message": f"Server process started (pid {self.pid})"}

    def get_state(self) -> dict[str, Any]:
        if self.pid is None:
            return {}
        return {"pid": self.pid, "start_time": self.start_time, "port": self.port,
                "boot_id": procinfo.boot_id()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        def as_int(key: str) -> int | None:
            value = state.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        self.pid = as_int("pid")
        self.start_time = as_int("start_time")
        self.port = as_int("port")
        if self.start_time is None or state.get("boot_id", "") != procinfo.boot_id():
            # Without a start time, or after a reboot (start times count from boot), the PID
            # cannot be told apart from a recycled one: unusable.
            self.pid = None

    def clear_state(self) -> None:
        self.pid = self.start_time = self.port = None
        self.proc = None
        self._started.clear()
