"""Talking to Slurm: the commands, what ``squeue`` says about a job, and one queue poller per hub.

Pure parsing (:func:`parse_squeue`, :func:`parse_duration`, :func:`explain_end`) is kept apart
from the commands so it can be tested without a cluster. :class:`JobQueue` is what every Slurm
spawner of a hub asks about its job: it keeps the ids being watched and answers from one
``squeue -j <all ids>`` call at most every ``max_age`` seconds, so polling 200 jobs costs one
``squeue``, not 200. A failed, slow or garbled ``squeue`` makes every job's state *unknown* —
never *gone*: a controller that is down for a few polls must not stop anyone's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)

#: ``squeue -o`` fields, in this order: id, state, reason, batch host, start time (expected
#: start while pending), time left, time limit, end time.
SQUEUE_FORMAT = "%i|%T|%r|%B|%S|%L|%l|%e"
PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD",
                            "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED", "RESIZING"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"})
#: Why a job ended, by its final state, in words its owner can read.
END_REASONS = {
    "COMPLETED": "the batch job finished",
    "CANCELLED": "the batch job was cancelled (scancel, or by an administrator)",
    "TIMEOUT": "the batch job reached its walltime limit",
    "DEADLINE": "the batch job reached its deadline",
    "NODE_FAIL": "the compute node running the batch job failed",
    "BOOT_FAIL": "the compute node could not boot for the batch job",
    "PREEMPTED": "the batch job was preempted by a higher-priority job",
    "OUT_OF_MEMORY": "the batch job ran out of memory",
    "FAILED": "the batch job failed",
}
# "Unable to contact slurm controller", "Socket timed out", "Zero Bytes were transmitted"...:
# anything but a clean answer is "unknown".
_INVALID_JOB = "Invalid job id specified"


class SlurmError(RuntimeError):
    """A Slurm command failed; the message is for logs (it may hold the command's stderr)."""


@dataclass(frozen=True)
class JobInfo:
    """One line of ``squeue`` output about a job."""

    job_id: str
    state: str
    reason: str
    host: str
    start: datetime | None  # started at, or (pending) Slurm's estimated start
    time_left: float | None  # seconds, while running
    time_limit: float | None  # seconds (None: unlimited)
    end: datetime | None  # while running: when the walltime runs out

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def ended(self) -> bool:
        return not (self.pending or self.running)


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


#: ``squeue`` could not say (controller unreachable, timed out): keep whatever we believed.
UNKNOWN = _Unknown()
#: A successful ``squeue`` does not list the job any more (it ended a while ago).
GONE = None
Status = JobInfo | _Unknown | None


def parse_duration(text: str) -> float | None:
    """Seconds in Slurm's ``[days-]hours:minutes:seconds`` (or ``minutes``, ``m:s``); None for
    ``UNLIMITED``, ``INVALID``, ``N/A`` and anything else."""
    text = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        return None
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if c is not None:  # h:m:s
        seconds = (a or 0) * 3600 + (b or 0) * 60 + c
    elif b is not None:  # d-h:m, else m:s
        seconds = (a or 0) * 3600 + b * 60 if days is not None else (a or 0) * 60 + b
    else:  # d-h, else minutes
        seconds = (a or 0) * 3600 if days is not None else (a or 0) * 60
    return float(seconds + (days or 0) * 86400)


def format_duration(seconds: float) -> str:
    """``1:05:00``, ``2-00:00:00`` (Slurm's notation) for a number of seconds."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    text = f"{h}:{m:02d}:{s:02d}"
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else text


def _time(text: str) -> datetime | None:
    """squeue prints local times without a zone; None for ``N/A``, ``Unknown`` and so on."""
    try:
        return datetime.fromisoformat(text.strip()).astimezone(UTC)
    except ValueError:
        return None


def parse_squeue(output: str) -> dict[str, JobInfo]:
    """Jobs by id from ``squeue -h -o SQUEUE_FORMAT`` output; lines that do not parse are
    skipped (a job array's ``123_4`` lines included)."""
    jobs: dict[str, JobInfo] = {}
    for line in output.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 8 or not fields[0].isdigit():
            continue
        job_id, state, reason, host, start, left, limit, end = fields
        state = state.strip().upper()
        jobs[job_id] = JobInfo(
            job_id, state, reason.strip(), "" if host in ("n/a", "(null)") else host.strip(),
            _time(start), parse_duration(left) if state in RUNNING_STATES else None,
            parse_duration(limit), _time(end) if state in RUNNING_STATES else None)
    return jobs


def explain_end(info: JobInfo | None) -> str:
    """A user-safe sentence saying why a job ended (None: it is no longer listed)."""
    if info is None:
        return "the batch job ended"
    text = END_REASONS.get(info.state, f"the batch job ended ({info.state.lower()})")
    if info.state == "TIMEOUT" and info.time_limit:
        text += f" ({format_duration(info.time_limit)})"
    elif info.reason and info.reason not in ("None", "NonZeroExitCode") and \
            info.state not in ("COMPLETED", "CANCELLED"):
        text += f" (Slurm's reason: {info.reason})"
    return text


def describe_pending(info: JobInfo) -> str:
    """``Job 12 is queued (PENDING, reason: Resources); estimated start 14:30 UTC``."""
    text = f"Batch job {info.job_id} is queued ({info.state}"
    if info.reason and info.reason != "None":
        text += f", reason: {info.reason}"
    text += ")"
    if info.start is not None:
        text += f"; estimated start {info.start.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    return text


async def run(argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 20.0,
              env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run a command without blocking the loop: ``(returncode, stdout, stderr)``. A command that
    does not finish in ``timeout`` seconds is killed and raises :class:`SlurmError`; one that
    cannot be run at all raises it too."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else
            asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(env) if env is not None else None,
            start_new_session=True)
    except OSError as e:
        raise SlurmError(f"cannot run {argv[0]}: {e.strerror}") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise SlurmError(f"{os.path.basename(argv[0])} did not answer within {timeout:g} s") \
            from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


class JobQueue:
    """The state of every watched job, from one ``squeue`` call per ``max_age`` seconds.

    Callers :meth:`watch` a job id while they care about it and ask :meth:`status`; concurrent
    askers share the call under way. ``squeue`` is the command (a path); ``calls`` counts the
    calls made (for tests and the benchmark).
    """

    def __init__(self, squeue: str = "squeue", max_age: float = 1.0,
                 timeout: float = 20.0) -> None:
        self.squeue = squeue
        self.max_age = max_age
        self.timeout = timeout
        self.calls = 0
        self._watched: dict[str, int] = {}  # job id → number of watchers
        self._jobs: dict[str, JobInfo] = {}
        self._ok = False  # whether the latest call answered
        self._fetched = float("-inf")  # time.monotonic() of the latest call's start
        self._fetching: asyncio.Task[None] | None = None
        self._asked: frozenset[str] = frozenset()  # the ids the latest call asked about

    def watch(self, job_id: str) -> None:
        self._watched[job_id] = self._watched.get(job_id, 0) + 1

    def unwatch(self, job_id: str) -> None:
        left = self._watched.get(job_id, 0) - 1
        if left > 0:
            self._watched[job_id] = left
        else:
            self._watched.pop(job_id, None)  # its line goes with the next call

    @property
    def watched(self) -> Iterable[str]:
        return self._watched.keys()

    async def status(self, job_id: str, max_age: float | None = None) -> Status:
        """What Slurm said about ``job_id`` at most ``max_age`` seconds ago: a
        :class:`JobInfo`, :data:`GONE`, or :data:`UNKNOWN` (squeue failed)."""
        temporary = job_id not in self._watched  # a one-off question, not a watched job
        if temporary:
            self.watch(job_id)
        try:
            age = self.max_age if max_age is None else max_age
            if time.monotonic() - self._fetched > age:
                await self.refresh()
            while job_id not in self._asked:
                # The latest call (maybe one under way when this job was first asked about)
                # did not include it: one more, which does.
                await self.refresh(job_id)
            if not self._ok:
                return UNKNOWN
            return self._jobs.get(job_id, GONE)
        finally:
            if temporary:
                self.unwatch(job_id)

    async def refresh(self, job_id: str | None = None) -> None:
        """One ``squeue`` for every watched job. Joins a call already under way, unless
        ``job_id`` is given and that call does not ask about it (then it waits for that call
        and makes one more)."""
        while True:
            fetching = self._fetching
            if fetching is None or fetching.done():
                self._fetching = fetching = asyncio.ensure_future(self._fetch())
                await asyncio.shield(fetching)
                return
            await asyncio.shield(fetching)
            if job_id is None or job_id in self._asked:
                return

    async def _fetch(self) -> None:
        ids = sorted(self._watched, key=int)
        self._fetched = time.monotonic()
        self._asked = frozenset(ids)
        if not ids:
            self._jobs, self._ok = {}, True
            return
        self.calls += 1
        argv = [self.squeue, "-h", "--states=all", "-o", SQUEUE_FORMAT, "-j", ",".join(ids)]
        try:
            code, out, err = await run(argv, timeout=self.timeout)
        except SlurmError as e:
            log.warning("squeue failed (job states unknown until it answers): %s", e)
            self._ok = False
            return
        if code != 0:
            if _INVALID_JOB in err and len(ids) == 1:
                # squeue's answer when the one id asked about is no longer known: gone.
                self._jobs, self._ok = {}, True
                return
            log.warning("squeue failed (job states unknown until it answers): %s",
                        err.strip()[:300] or f"exit status {code}")
            self._ok = False
            return
        self._jobs, self._ok = parse_squeue(out), True


async def sacct_state(sacct: str, job_id: str) -> str | None:
    """The final state of a job no longer in ``squeue`` from accounting (``COMPLETED``,
    ``TIMEOUT``...), or None when accounting is off or does not know."""
    try:
        code, out, _ = await run([sacct, "-n", "-X", "-P", "-o", "State", "-j", job_id],
                                 timeout=10.0)
    except SlurmError:
        return None
    words = out.split()
    return words[0].upper() if code == 0 and words else None
