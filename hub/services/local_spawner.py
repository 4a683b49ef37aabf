"""``LocalProcessSpawner``: each user server is a local process, as the user's own Unix account.

Which account is the ``accounts`` setting's (:mod:`hub.services.accounts`). When it is another
account than the hub's (the hub runs as root), the server's first process is a short ``sh``
script that, still as root, joins the server's cgroups (when limits are set), then drops to the
account with ``setpriv`` (``initgroups``, ``setgid``, ``setuid``) and, as the account, changes to
its home, opens its log there (``~/.himalia/logs/``, readable by the account only) and execs the
single-user command. ``umask`` is 077. The environment is built from scratch: the allow-list of
CONTRACTS §2, the account's ``USER``/``HOME``/``SHELL``, and the ``JUPYTERHUB_*`` variables.
Nothing the hub's account can read is reachable from there: the hub's data directory is 0700.

In ``hub`` mode (the hub is not root) the server runs as the hub's account in a directory of
its own under ``<data_dir>/users/``, with its log there.

The process runs in a session of its own (``start_new_session``), so stopping or restarting the
hub never stops it; a restarted hub finds it again from the saved ``{"pid", "start_time",
"uid", "boot_id", ...}`` state, and signals nothing whose start time or owner differ.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from hub.services import accounts, cgroups, procinfo
from hub.services.accounts import Account, AccountError
from hub.services.server_names import safe_dir_name
from hub.services.spawner import (
    ProgressEvent,
    Spawner,
    SpawnerError,
    passthrough_env,
)

log = logging.getLogger(__name__)

LOG_NAME = ".himalia-server.log"
#: Where a server's log goes, relative to its account's home (account mode).
ACCOUNT_LOG_DIR = ".himalia/logs"

# Runs as root: join each cgroup given before "--", then exec the rest (setpriv ...).
_JOIN = 'for f do shift; [ "$f" = -- ] && break; echo $$ > "$f" || exit 126; done; exec "$@"'
# Runs as the account: its home, its log (made by the account itself, so a symlink planted
# there can only point where the account may write anyway), then the server.
_AS_ACCOUNT = ('log=$1; shift; cd "$HOME" || exit 125; mkdir -p -m 700 "${log%/*}" || exit 125; '
               'exec >>"$log" 2>&1; exec "$@"')
#: Exit statuses of those scripts, and what they mean for the user.
WRAPPER_EXITS = {
    125: "the server could not use its home directory",
    126: "the server could not join its resource-limit group",
    127: "the single-user command was not found",
}


def free_port(ip: str = "127.0.0.1") -> int:
    """An unused TCP port on ``ip`` (the server binds it right after; a race is very unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_command(cmd: list[str], path: str | None) -> list[str]:
    """``cmd`` with its program found: next to the hub's Python first (the venv or prefix the
    hub was installed into, whatever ``PATH`` says), then on ``path``. Absolute and relative
    paths are kept as given."""
    if not cmd or "/" in cmd[0]:
        return cmd
    beside = Path(sys.executable).with_name(cmd[0])
    if os.access(beside, os.X_OK):
        return [str(beside), *cmd[1:]]
    found = shutil.which(cmd[0], path=path)
    return [found, *cmd[1:]] if found else cmd


def expand_home(path: str, home: str) -> str:
    """``~`` and ``~/x`` relative to ``home`` (the account's, not the hub's)."""
    if path == "~" or path.startswith("~/"):
        return home + path[1:]
    return path


class LocalProcessSpawner(Spawner):
    """Runs ``singleuser_cmd + singleuser_args`` as a local process (see the module doc)."""

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
        self.uid: int | None = None
        self.cgroup: str | None = None  # the server's cgroup directory name, when it has one
        # Set only in the hub process that started the server: lets poll() reap the child and
        # report its real exit status. After a hub restart the server is not our child.
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = asyncio.Event()
        self._exit_reason: str | None = None

    # --- hooks ---------------------------------------------------------------------------
    async def account(self) -> Account:
        """The account the server runs as (created first when the policy says so)."""
        try:
            return await accounts.policy(self.config).ensure(self.user)
        except AccountError as e:
            raise SpawnerError(f"Spawn failed: {e}") from None

    def work_dir(self, acct: Account | None = None) -> Path:
        """Where the server starts: the account's home, or (one shared account) a directory
        unique to the (user, server) under the data directory."""
        acct = acct or Account.current()
        if acct.uid != os.getuid():
            return Path(acct.home)
        return self.config.data_path / "users" / safe_dir_name(self.user, self.server)

    def log_path(self, acct: Account | None = None) -> Path:
        """The server's log: readable by its account only (it may hold URLs with tokens)."""
        acct = acct or Account.current()
        if acct.uid != os.getuid():
            name = f"server-{self.server}.log" if self.server else "server.log"
            return Path(acct.home) / ACCOUNT_LOG_DIR / name
        return self.work_dir(acct) / LOG_NAME

    def command(self) -> list[str]:
        """The single-user command, its program resolved (see :func:`resolve_command`)."""
        cmd = [*self.config.singleuser_cmd, *self.config.singleuser_args]
        return resolve_command(cmd, os.environ.get("PATH"))

    def get_env(self, port: int, acct: Account | None = None) -> dict[str, str]:
        """The complete environment: allow-listed hub variables, the account (default: the
        hub's own), the contract."""
        acct = acct or Account.current()
        env = passthrough_env(os.environ)
        env.update(USER=acct.name, LOGNAME=acct.name, HOME=acct.home, SHELL=acct.shell)
        env.update(self.contract_env(f"http://{self.ip}:{port}"))
        if self.config.root_dir:
            env["JUPYTERHUB_ROOT_DIR"] = expand_home(str(self.config.root_dir), acct.home)
        return env

    # --- the contract --------------------------------------------------------------------
    async def start(self) -> str:
        if self.pid is not None and await self.poll() is None:
            raise SpawnerError("the server is already running")
        cmd = self.command()
        if not cmd:
            raise SpawnerError("no single-user command is configured")
        acct = await self.account()
        switch = acct.uid != os.getuid()
        if switch and (problem := accounts.access_problem(acct, cmd[0])):
            log.error("%r cannot run %s: %s", self, cmd[0], problem)
            raise SpawnerError(f"Spawn failed: the single-user command cannot be run by the "
                               f"account {acct.name} ({problem})")
        group = self._make_cgroup()
        port = free_port(self.ip)
        env = self.get_env(port, acct)
        self._exit_reason = None
        try:
            proc = self._popen(cmd, env, acct, group)
        except OSError as e:
            if group is not None:
                group.remove()
            log.error("cannot run %s for %r: %s", cmd[0], self, e)
            raise SpawnerError(f"the server command could not be run ({e.strerror})") from None
        self.proc = proc
        self.pid = proc.pid
        self.uid = acct.uid
        # A zombie keeps its /proc entry until reaped, so the start time is readable even if the
        # command exited at once.
        self.start_time = procinfo.start_time(proc.pid)
        self.port = port
        self._started.set()
        log.info("started %r as %s (uid %d): pid %d, port %d", self, acct.name, acct.uid,
                 proc.pid, port)
        return f"http://{self.ip}:{port}"

    def _make_cgroup(self) -> cgroups.Group | None:
        manager = cgroups.manager(self.config)
        if manager is None:
            self.cgroup = None
            return None
        name = safe_dir_name(self.user, self.server)
        try:
            group = manager.create(name)
        except cgroups.CgroupError as e:
            log.error("%r: %s", self, e)
            raise SpawnerError("Spawn failed: the server's resource limits could not be "
                               "set up") from None
        self.cgroup = name
        return group

    def _popen(self, cmd: list[str], env: dict[str, str], acct: Account,
               group: cgroups.Group | None) -> subprocess.Popen[bytes]:
        argv = list(cmd)
        if acct.uid != os.getuid():
            log_file = str(self.log_path(acct))
            setpriv = accounts.system_command("setpriv") or "setpriv"
            argv = [setpriv, f"--reuid={acct.uid}", f"--regid={acct.gid}", "--init-groups",
                    "--", "/bin/sh", "-c", _AS_ACCOUNT, "himalia-server", log_file, *cmd]
            cwd, out = "/", subprocess.DEVNULL
        else:
            workdir = self.work_dir(acct)
            workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
            cwd = str(workdir)
            # The log belongs to the server (its own file, 0600): the hub may restart meanwhile.
            out = os.open(self.log_path(acct), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if group is not None:
            argv = ["/bin/sh", "-c", _JOIN, "himalia-join", *group.procs_files(), "--", *argv]
        try:
            return subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, umask=0o077,
            )
        finally:
            if isinstance(out, int) and out >= 0:
                os.close(out)

    async def poll(self) -> int | None:
        if self.pid is None:
            return 0
        status = self._poll_status()
        if status is not None and self._exit_reason is None:
            self._exit_reason = self._explain(status)
        return status

    def _poll_status(self) -> int | None:
        assert self.pid is not None
        if self.proc is not None and self.proc.pid == self.pid:
            return self.proc.poll()
        stat = procinfo.read_stat(self.pid)
        if not procinfo.matches(self.pid, self.start_time, self.uid):
            return 1  # gone, or the PID now names another process (or another owner's)
        if stat is not None and stat.zombie:
            status = procinfo.reap(self.pid)  # our child after all (e.g. a reloaded spawner)
            return 1 if status is None else status
        return None

    def _explain(self, status: int) -> str:
        """A user-safe reason for an exit with ``status`` (read before the cgroup goes)."""
        group = self._group()
        # The OOM killer sends SIGKILL; the wrapper's sh is gone by then (exec), so the status
        # is the server's own.
        if status == -signal.SIGKILL and group is not None and group.oom_kills() > 0:
            limit = cgroups.Limits.from_config(self.config).mem_bytes
            size = f" (limit {cgroups.human_size(limit)})" if limit else ""
            return f"the server ran out of memory{size} and was stopped by the kernel"
        if status in WRAPPER_EXITS:
            return WRAPPER_EXITS[status]
        if status < 0:
            return f"the server was stopped by signal {-status}"
        return f"the server stopped unexpectedly (exit status {status})"

    def exit_reason(self) -> str | None:
        return self._exit_reason

    def oom_kills(self) -> int:
        """Processes of this server the kernel killed for going over ``mem_limit`` so far."""
        group = self._group()
        return group.oom_kills() if group is not None else 0

    def notices(self) -> list[str]:
        kills = self.oom_kills()
        if not kills:
            return []
        limit = cgroups.Limits.from_config(self.config).mem_bytes
        size = f" ({cgroups.human_size(limit)})" if limit else ""
        times = "once" if kills == 1 else f"{kills} times"
        return [f"Your server went over its memory limit{size}: the kernel killed one of its "
                f"processes (usually a notebook kernel) {times}. Save your work and use less "
                "memory, or ask for a larger limit."]

    def _group(self) -> cgroups.Group | None:
        manager = cgroups.manager(self.config) if self.cgroup else None
        return manager.group(self.cgroup) if manager and self.cgroup else None

    async def stop(self, now: bool = False) -> None:
        if self.pid is None:
            return
        timeout = self.term_timeout_now if now else self.term_timeout
        reaper = procinfo.popen_reaper(self.proc)
        gone = await procinfo.terminate(self.pid, self.start_time, timeout, reaper=reaper,
                                        uid=self.uid)
        if not gone:
            log.error("%r (pid %d) survived SIGKILL; giving up on it", self, self.pid)
        group = self._group()
        if group is not None:
            # Kernels and terminals that left the server's process group are still in its
            # cgroup: nothing of a stopped server keeps running.
            await asyncio.to_thread(group.remove)

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        await self._started.wait()
        yield {"progress": 30, "message": f"Server process started (pid {self.pid})"}

    def get_state(self) -> dict[str, Any]:
        if self.pid is None:
            return {}
        state: dict[str, Any] = {"pid": self.pid, "start_time": self.start_time,
                                 "port": self.port, "uid": self.uid,
                                 "boot_id": procinfo.boot_id()}
        if self.cgroup:
            state["cgroup"] = self.cgroup
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        def as_int(key: str) -> int | None:
            value = state.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        self.pid = as_int("pid")
        self.start_time = as_int("start_time")
        self.port = as_int("port")
        self.uid = as_int("uid")
        cgroup = state.get("cgroup")
        self.cgroup = cgroup if isinstance(cgroup, str) and "/" not in cgroup else None
        if self.start_time is None or state.get("boot_id", "") != procinfo.boot_id():
            # Without a start time, or after a reboot (start times count from boot), the PID
            # cannot be told apart from a recycled one: unusable.
            self.pid = None

    def clear_state(self) -> None:
        self.pid = self.start_time = self.port = self.uid = None
        self.cgroup = None
        self.proc = None
        self._started.clear()
