"""Fixtures shared by the hub's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub import mockserver


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """PIDs to kill after the test, whatever happened."""
    started: list[int] = []
    yield started
    for pid in started:
        mockserver.kill_pid(pid)
