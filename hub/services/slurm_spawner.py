"""``SlurmSpawner``: each user server is a Slurm batch job, submitted as the user's own account.

:meth:`SlurmSpawner.start` renders the batch script (the Jinja2 template :data:`DEFAULT_TEMPLATE`,
or the site's own from ``slurm_template``) and submits it with ``sbatch --parsable`` on stdin,
run as the account (``setpriv``, as :mod:`hub.services.local_spawner` does; the hub's own
account in ``hub`` mode). The job runs ``python -m singleuser.batch <single-user command>``: it
picks a free port on its compute node, reports it to the hub (``POST /hub/api/batchspawner`` with
the server's own token) and execs the server bound there. The hub routes the proxy to
``http://<batch host>:<port>``, the host being the node Slurm names (``squeue %B``).

While the job is queued, :meth:`progress` says so, with Slurm's reason and estimated start time,
updated live. :meth:`poll` asks the hub-wide :class:`~hub.services.slurm.JobQueue` (one
``squeue`` for all jobs): a job that Slurm cannot be asked about (controller down, ``squeue``
slow) is assumed to still run; one that ended (walltime, node failure, ``scancel``) is reported
with Slurm's reason (:meth:`exit_reason`). :meth:`stop` is ``scancel`` (as the account) and waits,
bounded, for the job to leave the running states. The job id, account uid, host and port are
the state, so a restarted hub re-attaches to running and queued jobs alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import jinja2

from hub.services import accounts, slurm
from hub.services.accounts import Account, AccountError
from hub.services.local_spawner import resolve_command
from hub.services.slurm import JobInfo, JobQueue, SlurmError
from hub.services.spawner import ProgressEvent, Spawner, SpawnerError, passthrough_env

log = logging.getLogger(__name__)

#: The shipped batch script. Variables: see :meth:`SlurmSpawner.template_vars` (and the README).
DEFAULT_TEMPLATE = """\
#!/bin/bash
#SBATCH --job-name={{ job_name }}
#SBATCH --output={{ log }}
#SBATCH --chdir={{ home }}
#SBATCH --export=ALL
{% if partition %}#SBATCH --partition={{ partition }}
{% endif %}{% if account %}#SBATCH --account={{ account }}
{% endif %}{% if qos %}#SBATCH --qos={{ qos }}
{% endif %}{% if walltime %}#SBATCH --time={{ walltime }}
{% endif %}{% if cpus %}#SBATCH --cpus-per-task={{ cpus }}
{% endif %}{% if memory %}#SBATCH --mem={{ memory }}
{% endif %}{% if gres %}#SBATCH --gres={{ gres }}
{% endif %}{% if reservation %}#SBATCH --reservation={{ reservation }}
{% endif %}{% for line in directives %}#SBATCH {{ line }}
{% endfor %}
set -eu
umask 077
{{ prologue }}
exec {{ python }} -m singleuser.batch {{ cmd }}
"""

#: The resources a job may ask for, and what a valid value looks like (no value may carry a
#: newline or anything else a batch script line could be bent with).
RESOURCE_SYNTAX: dict[str, re.Pattern[str]] = {
    "partition": re.compile(r"[A-Za-z0-9_.,-]{1,64}"),
    "account": re.compile(r"[A-Za-z0-9_.-]{1,64}"),
    "qos": re.compile(r"[A-Za-z0-9_.-]{1,64}"),
    "walltime": re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}"),
    "cpus": re.compile(r"[1-9]\d{0,3}"),
    "memory": re.compile(r"[1-9]\d{0,9}[KMGT]?"),
    "gres": re.compile(r"[A-Za-z0-9_:,.-]{1,128}"),
    "reservation": re.compile(r"[A-Za-z0-9_.-]{1,64}"),
}


def resource_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be the job's ``name`` resource, or None when it can."""
    pattern = RESOURCE_SYNTAX.get(name)
    if pattern is None:
        return f"unknown resource {name!r}"
    if not pattern.fullmatch(value):
        return f"{name} has an invalid value {value!r}"
    return None


def gres_for(gpus: Any) -> str:
    """``gpu:N`` for a GPU count (empty for none)."""
    return f"gpu:{int(gpus)}" if gpus else ""


class SlurmSpawner(Spawner):
    """Runs the single-user server as a Slurm batch job (see the module docstring)."""

    #: The hub-wide poller every Slurm spawner shares (made on first use).
    queues: ClassVar[dict[tuple[str, float], JobQueue]] = {}
    #: Seconds between ``squeue`` checks while a start waits for its job.
    wait_interval = 1.0
    #: Seconds :meth:`stop` waits for the job to end after ``scancel``.
    cancel_wait = 15.0
    cancel_wait_now = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.start_timeout = cfg.slurm_queue_timeout or None
        self.job_id: str | None = None
        self.uid: int | None = None
        self.host: str | None = None
        self.port: int | None = None
        self.info: JobInfo | None = None  # the latest squeue line about the job
        self._reported = asyncio.Event()
        self._changed = asyncio.Event()
        self._exit_reason: str | None = None
        self._warned = False
        self._watched: str | None = None  # the job id this spawner has the queue watch

    # --- helpers -------------------------------------------------------------------------
    @property
    def queue(self) -> JobQueue:
        cmd = self._command("squeue")
        key = (cmd, self.wait_interval / 2)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = JobQueue(cmd, max_age=key[1])
        return queue

    def _command(self, name: str) -> str:
        folder = self.config.slurm_bin_dir
        return os.path.join(folder, name) if folder else (accounts.system_command(name) or name)

    def _watch(self) -> None:
        """Keep the job in the queue's one ``squeue`` call until it ended or is forgotten."""
        if self.job_id is not None and self._watched != self.job_id:
            self._unwatch()
            self.queue.watch(self.job_id)
            self._watched = self.job_id

    def _unwatch(self) -> None:
        if self._watched is not None:
            self.queue.unwatch(self._watched)
            self._watched = None

    def _state_changed(self) -> None:
        if self.on_state is not None:
            try:
                self.on_state()
            except Exception:
                log.exception("saving the state of %r failed", self)

    async def account(self) -> Account:
        try:
            return await accounts.policy(self.config).ensure(self.user)
        except AccountError as e:
            raise SpawnerError(str(e)) from None

    def resources(self) -> dict[str, str]:
        """The job's resources: the settings, overridden by the (validated) user options."""
        cfg = self.config
        res = {
            "partition": cfg.slurm_partition, "account": cfg.slurm_account,
            "qos": cfg.slurm_qos, "walltime": cfg.slurm_walltime,
            "cpus": str(cfg.slurm_cpus or ""), "memory": cfg.slurm_memory,
            "gres": cfg.slurm_gres, "reservation": cfg.slurm_reservation,
        }
        opts = self.user_options
        for key in RESOURCE_SYNTAX:
            if opts.get(key) not in (None, ""):
                res[key] = str(opts[key])
        if opts.get("gpus") not in (None, ""):
            res["gres"] = gres_for(opts["gpus"])
        for key, value in res.items():
            if value and (problem := resource_problem(key, value)):
                raise SpawnerError(problem)
        return res

    def command(self) -> list[str]:
        cmd = [*self.config.singleuser_cmd, *self.config.singleuser_args]
        return resolve_command(cmd, os.environ.get("PATH"))

    def template_vars(self, acct: Account) -> dict[str, Any]:
        """What the batch-script template sees."""
        name = f"server-{self.server}" if self.server else "server"
        job = f"himalia-{self.user}" + (f"-{self.server}" if self.server else "")
        return {
            **self.resources(),
            "directives": list(self.config.slurm_directives),
            "prologue": self.config.slurm_prologue,
            "python": shlex.quote(sys.executable),
            "cmd": shlex.join(self.command()),
            "home": acct.home,
            "log": f"{acct.home}/.himalia/logs/slurm-{name}-%j.log",
            "job_name": re.sub(r"[^A-Za-z0-9_.-]", "_", job),
            "user": self.user, "server": self.server, "account_name": acct.name,
            "bind_ip": self.config.slurm_bind_ip,
        }

    def render(self, acct: Account) -> str:
        source = DEFAULT_TEMPLATE
        if self.config.slurm_template:
            try:
                source = Path(self.config.slurm_template).read_text()
            except OSError as e:
                log.error("cannot read slurm_template %s: %s", self.config.slurm_template, e)
                raise SpawnerError("the batch script template cannot be read") \
                    from None
        # A shell script, not HTML: values are checked against RESOURCE_SYNTAX or quoted.
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 autoescape=False)  # noqa: S701
        try:
            return env.from_string(source).render(**self.template_vars(acct))
        except jinja2.TemplateError as e:
            log.error("the batch script template failed: %s", e)
            raise SpawnerError("the batch script template is broken") from None

    def job_env(self, acct: Account) -> dict[str, str]:
        """sbatch's environment, which the job inherits (``--export=ALL``): built from scratch
        like a local server's; the job fills in its port."""
        env = passthrough_env(os.environ)
        env.update(USER=acct.name, LOGNAME=acct.name, HOME=acct.home, SHELL=acct.shell)
        env.update(self.contract_env(f"http://{self.config.slurm_bind_ip}:0"))
        env["HIMALIA_BATCH_REPORT_URL"] = f"{self.hub_api_url}/batchspawner"
        return env

    def _as_account(self, acct: Account, argv: list[str]) -> list[str]:
        if acct.uid == os.getuid():
            return argv
        setpriv = accounts.system_command("setpriv") or "setpriv"
        return [setpriv, f"--reuid={acct.uid}", f"--regid={acct.gid}", "--init-groups", "--",
                *argv]

    # --- the contract --------------------------------------------------------------------
    async def start(self) -> str:
        if self.job_id is None:
            await self._submit()
        assert self.job_id is not None
        return await self._wait_running(self.job_id)

    async def _submit(self) -> None:
        acct = await self.account()
        if acct.uid != os.getuid() and (problem := accounts.access_problem(acct,
                                                                          sys.executable)):
            log.error("%r: %s cannot run %s: %s", self, acct.name, sys.executable, problem)
            raise SpawnerError(f"the hub's Python cannot be run by the account "
                               f"{acct.name} ({problem})")
        script = self.render(acct)
        # As the account: its log folder (the job's --output must exist), then sbatch.
        argv = self._as_account(acct, [
            "/bin/sh", "-c", 'mkdir -p -m 700 "$HOME/.himalia/logs" && exec "$@"',
            "himalia-sbatch", self._command("sbatch"), "--parsable"])
        try:
            code, out, err = await slurm.run(argv, stdin=script.encode(),
                                             env=self.job_env(acct), timeout=60.0)
        except SlurmError as e:
            log.error("sbatch for %r failed: %s", self, e)
            raise SpawnerError("the batch job could not be submitted") from None
        job_id = out.strip().split(";")[0]
        if code != 0 or not job_id.isdigit():
            message = err.strip().splitlines()[-1] if err.strip() else f"exit status {code}"
            log.error("sbatch for %r failed: %s", self, err.strip() or out.strip())
            # sbatch's own message says which value Slurm refused; it is the user's request.
            raise SpawnerError(f"Slurm refused the job ({message[:300]})")
        self.job_id, self.uid = job_id, acct.uid
        self._watch()
        log.info("submitted batch job %s for %r as %s", job_id, self, acct.name)
        self._state_changed()
        self._changed.set()

    async def _wait_running(self, job_id: str) -> str:
        """Until the job runs and its server reported its port; raises if the job ended."""
        self._watch()
        fresh = False
        while True:
            age = 0.0 if fresh else self.wait_interval / 2
            fresh = False
            status = await self.queue.status(job_id, max_age=age)
            if isinstance(status, JobInfo) or status is slurm.GONE:
                info = status if isinstance(status, JobInfo) else None
                if info is None or info.ended:
                    self._unwatch()
                    reason = await self._end_reason(info)
                    raise SpawnerError(f"{reason} before its server "
                                       f"started (job {job_id})")
                self._update(info)
                if info.running and self.port and info.host:
                    self.host = info.host
                    self._state_changed()
                    return f"http://{info.host}:{self.port}"
            if self._reported.is_set() and self.port:
                self._reported.clear()
                fresh = True  # ask squeue again at once: the job runs, but where?
                continue
            try:
                async with asyncio.timeout(self.wait_interval):
                    await self._reported.wait()
            except TimeoutError:
                pass

    def _update(self, info: JobInfo) -> None:
        old, self.info = self.info, info
        if old is None or (old.state, old.reason, old.start) != (info.state, info.reason,
                                                                 info.start):
            self._changed.set()

    def report(self, port: int) -> None:
        """The job's server says it listens on ``port`` (from the batchspawner endpoint)."""
        self.port = port
        self._state_changed()
        self._reported.set()
        self._changed.set()

    @property
    def waiting_for_port(self) -> bool:
        return self.job_id is not None and self.host is None

    async def _end_reason(self, info: JobInfo | None) -> str:
        if info is None and self.job_id is not None:
            state = await slurm.sacct_state(self._command("sacct"), self.job_id)
            if state:
                info = JobInfo(self.job_id, state, "", "", None, None, None, None)
        return slurm.explain_end(info)

    async def poll(self) -> int | None:
        if self.job_id is None:
            return 0
        self._watch()
        status = await self.queue.status(self.job_id)
        if status is slurm.UNKNOWN:
            return None  # Slurm cannot be asked: the job is assumed to run on
        info = status if isinstance(status, JobInfo) else None
        if info is not None and not info.ended:
            self.info = info
            self._check_walltime()
            return None
        self._unwatch()
        if self._exit_reason is None:
            self._exit_reason = await self._end_reason(info)
        return 0 if info is not None and info.state == "COMPLETED" else 1

    def _check_walltime(self) -> None:
        left = self.time_left()
        warn = self.config.slurm_walltime_warning
        if left is not None and warn > 0 and left <= warn and not self._warned:
            self._warned = True
            log.warning("%r: batch job %s reaches its walltime in %d s", self, self.job_id,
                        int(left))

    def time_left(self) -> float | None:
        """Seconds until the job's walltime runs out (None: unknown or unlimited)."""
        info = self.info
        if info is None or not info.running or info.end is None:
            return None
        return max((info.end - datetime.now(UTC)).total_seconds(), 0.0)

    def walltime(self) -> dict[str, Any] | None:
        """``{"limit", "ends_at", "seconds_left", "warning"}`` while the job runs."""
        info, left = self.info, self.time_left()
        if info is None or left is None or info.end is None:
            return None
        warn = self.config.slurm_walltime_warning
        return {"limit": slurm.format_duration(info.time_limit) if info.time_limit else None,
                "ends_at": info.end.isoformat().replace("+00:00", "Z"),
                "seconds_left": int(left), "warning": warn > 0 and left <= warn}

    def model_extra(self) -> dict[str, Any]:
        wall = self.walltime()
        return {"walltime": wall} if wall else {}

    def exit_reason(self) -> str | None:
        return self._exit_reason

    def notices(self) -> list[str]:
        wall = self.walltime()
        if wall is None:
            return []
        minutes = wall["seconds_left"] // 60
        when = wall["ends_at"].replace("T", " ").replace("Z", " UTC")
        text = (f"Your server is batch job {self.job_id}; its walltime ({wall['limit']}) "
                f"runs out at {when}, in {minutes} minute{'s' if minutes != 1 else ''}.")
        if wall["warning"]:
            text += " It will be stopped then: save your work now."
        return [text]

    async def stop(self, now: bool = False) -> None:
        job_id = self.job_id
        if job_id is None:
            return
        wait = self.cancel_wait_now if now else self.cancel_wait
        deadline = time.monotonic() + wait
        argv = [self._command("scancel"), job_id]
        if self.uid is not None and self.uid != os.getuid():
            argv = [accounts.system_command("setpriv") or "setpriv", f"--reuid={self.uid}",
                    "--regid=" + str(_gid_of(self.uid)), "--init-groups", "--", *argv]
        self._watch()
        cancelled = False
        while time.monotonic() < deadline:
            if not cancelled:
                try:
                    code, _, err = await slurm.run(argv, timeout=max(
                        deadline - time.monotonic(), 1.0))
                    cancelled = code == 0
                    if code != 0:
                        log.warning("scancel %s failed: %s", job_id, err.strip()[:300])
                except SlurmError as e:
                    log.warning("scancel %s failed: %s", job_id, e)
            status = await self.queue.status(job_id, max_age=0.0)
            if status is slurm.GONE or (isinstance(status, JobInfo) and status.ended):
                self._unwatch()
                return
            await asyncio.sleep(0.2)
        log.error("batch job %s of %r did not end within %g s of scancel", job_id, self,
                  wait)

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        last = ""
        while True:
            await self._changed.wait()
            self._changed.clear()
            info = self.info
            if info is not None and info.pending:
                message = slurm.describe_pending(info)
            elif info is not None and info.running:
                message = (f"Batch job {info.job_id} runs on {info.host}; waiting for its "
                           "server to report its port")
                if self.port:
                    message = f"Batch job {info.job_id}: server on port {self.port}"
            elif self.job_id is not None:
                message = f"Batch job {self.job_id} submitted"
            else:
                continue
            if message != last:
                last = message
                yield {"progress": 40 if info is not None and info.running else 20,
                       "message": message}

    def get_state(self) -> dict[str, Any]:
        if self.job_id is None:
            return {}
        return {"job_id": self.job_id, "uid": self.uid, "host": self.host, "port": self.port}

    def load_state(self, state: Mapping[str, Any]) -> None:
        job_id = state.get("job_id")
        self.job_id = job_id if isinstance(job_id, str) and job_id.isdigit() else None
        uid, port, host = state.get("uid"), state.get("port"), state.get("host")
        self.uid = uid if isinstance(uid, int) and not isinstance(uid, bool) else None
        self.port = port if isinstance(port, int) and not isinstance(port, bool) else None
        self.host = host if isinstance(host, str) and host else None
        if self.job_id is not None:
            self._watch()
            self._changed.set()

    def clear_state(self) -> None:
        self._unwatch()
        self.job_id = self.uid = self.host = self.port = None
        self.info = None
        self._reported.clear()

    @property
    def can_resume_start(self) -> bool:
        return self.job_id is not None


def _gid_of(uid: int) -> int:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid

