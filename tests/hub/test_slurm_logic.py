"""Slurm's output parsed, end reasons worded, resources checked, the shared poller — no cluster
(a fake ``squeue`` script stands in for the poller's tests)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from hub.services import slurm
from hub.services.slurm_spawner import resource_problem


@pytest.mark.parametrize(("text", "seconds"), [
    ("1", 60), ("30", 1800), ("1:30", 90), ("1:00:00", 3600), ("2-00:00:00", 172800),
    ("1-2", 93600), ("1-02:30", 95400), ("UNLIMITED", None), ("N/A", None), ("", None),
])
def test_durations(text: str, seconds: float | None) -> None:
    assert slurm.parse_duration(text) == seconds


def test_format_duration() -> None:
    assert slurm.format_duration(3600) == "1:00:00"
    assert slurm.format_duration(90061) == "1-01:01:01"


def test_squeue_lines() -> None:
    out = ("12|PENDING|Resources|n/a|2030-01-01T10:00:00|1:00:00|1:00:00|N/A\n"
           "13|RUNNING|None|vm|2026-12-03T14:09:29|0:59|1:00|2026-12-03T14:10:29\n"
           "14_2|RUNNING|None|vm|N/A|1:00|1:00|N/A\n"
           "garbage\n")
    jobs = slurm.parse_squeue(out)
    assert set(jobs) == {"12", "13"}
    assert jobs["12"].pending and jobs["12"].reason == "Resources" and jobs["12"].host == ""
    assert jobs["12"].start is not None and jobs["12"].time_left is None
    assert jobs["13"].running and jobs["13"].host == "vm" and jobs["13"].time_left == 59
    assert jobs["13"].time_limit == 60 and jobs["13"].end is not None
    assert "reason: Resources" in slurm.describe_pending(jobs["12"])
    assert "; estimated start 20" in slurm.describe_pending(jobs["12"])  # (local time → UTC)


def test_end_reasons() -> None:
    def info(state: str, reason: str = "None") -> slurm.JobInfo:
        return slurm.JobInfo("1", state, reason, "", None, None, 60.0, None)

    assert slurm.explain_end(info("TIMEOUT")) == \
        "the batch job reached its walltime limit (0:01:00)"
    assert "cancelled" in slurm.explain_end(info("CANCELLED"))
    assert "compute node" in slurm.explain_end(info("NODE_FAIL"))
    assert "Slurm's reason: OutOfMemory" in slurm.explain_end(info("FAILED", "OutOfMemory"))
    assert slurm.explain_end(None) == "the batch job ended"


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("partition", "gpu", True), ("partition", "gpu\n#SBATCH --uid=0", False),
    ("walltime", "1:00:00", True), ("walltime", "2-00:00:00", True), ("walltime", "1h", False),
    ("memory", "4G", True), ("memory", "4 G", False), ("cpus", "0", False),
    ("gres", "gpu:2", True), ("gres", "gpu;rm", False), ("account", "$(id)", False),
    ("nodes", "1", False),
])
def test_resource_syntax(name: str, value: str, ok: bool) -> None:
    assert (resource_problem(name, value) is None) is ok


def _fake_squeue(tmp: Path, body: str) -> str:
    path = tmp / "squeue"
    path.write_text("#!/bin/sh\necho call >> " + str(tmp / "calls") + "\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_one_squeue_for_many_jobs(tmp_path: Path) -> None:
    lines = "".join(f"{i}|RUNNING|None|vm|N/A|10:00|1:00:00|N/A\\n" for i in range(1, 201))
    queue = slurm.JobQueue(_fake_squeue(tmp_path, f'printf "{lines}"\n'), max_age=5.0)

    async def poll_all() -> list[slurm.Status]:
        for i in range(1, 201):
            queue.watch(str(i))
        return [await queue.status(str(i)) for i in range(1, 201)]

    found = asyncio.run(poll_all())
    assert all(isinstance(s, slurm.JobInfo) and s.running for s in found)
    assert queue.calls == 1
    assert (tmp_path / "calls").read_text().count("call") == 1


def test_a_failing_squeue_is_unknown_not_gone(tmp_path: Path) -> None:
    queue = slurm.JobQueue(_fake_squeue(tmp_path, "echo 'slurm_load_jobs error: Unable to "
                                        "contact slurm controller' >&2; exit 1\n"))
    assert asyncio.run(queue.status("7")) is slurm.UNKNOWN
    slow = slurm.JobQueue(_fake_squeue(tmp_path, "sleep 5\n"), timeout=0.3)
    assert asyncio.run(slow.status("7")) is slurm.UNKNOWN


def test_an_unknown_single_id_is_gone(tmp_path: Path) -> None:
    queue = slurm.JobQueue(_fake_squeue(tmp_path, "echo 'slurm_load_jobs error: Invalid job "
                                        "id specified' >&2; exit 1\n"))
    assert asyncio.run(queue.status("7")) is slurm.GONE
