"""Shared fixtures: real hub processes (with their proxy and user servers) on ephemeral ports.

- ``hub``: one hub per test module (create uniquely named users with ``hub.new_user()``);
- ``make_hub``: a factory for a hub of your own (custom flags), stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hubproc import HubProcess


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hub"))
    try:
        yield proc.start()
    finally:
        proc.cleanup()


@pytest.fixture
def make_hub(tmp_path: Path) -> Iterator[Callable[..., HubProcess]]:
    started: list[HubProcess] = []

    def factory(**kw: Any) -> HubProcess:
        data_dir = kw.pop("data_dir", None) or tmp_path / f"hub{len(started)}"
        proc = HubProcess(Path(data_dir), **kw)
        started.append(proc)
        return proc.start()

    yield factory
    for proc in started:
        proc.cleanup()
