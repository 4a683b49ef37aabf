"""Shared fixtures: real hub processes (with their proxy and user servers) on ephemeral ports.

- ``hub``: one hub per test module (create uniquely named users with ``hub.new_user()``);
- ``make_hub``: a factory for a hub of your own (custom flags), stopped after the test.

Every test also fails when in-process code logs at ERROR or above (Tornado logs an uncaught
handler exception, asyncio a task exception nobody retrieved, and the request still looks
fine to the test). A test that expects such records says so with
``@pytest.mark.allow_error_logs`` — with regular expressions as arguments, only matching
messages are allowed. Child processes are not covered: their output is checked by the
fixtures that start them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hubproc import HubProcess
from tests.oidc_provider import OIDCProvider

_ERROR_LOGS = pytest.StashKey["_ErrorRecords"]()


class _ErrorRecords(logging.Handler):
    """Collects the ERROR-and-above records a test did not declare it expects."""

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        super().__init__(logging.ERROR)
        self.allowed = allowed  # None: nothing declared; (): every message allowed
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.allowed is not None:
            message = record.getMessage()
            if not self.allowed or any(re.search(p, message) for p in self.allowed):
                return
        self.records.append(record)

    def check(self, when: str) -> None:
        """Fail with the unexpected records seen so far (then forget them)."""
        records, self.records = self.records, []
        if records:
            lines = "\n".join(f"  {r.levelname} {r.name}: {r.getMessage()}" for r in records)
            pytest.fail(
                f"unexpected ERROR log records {when} (mark the test "
                f"@pytest.mark.allow_error_logs if they are expected):\n{lines}",
                pytrace=False,
            )


@pytest.fixture(autouse=True)
def _no_unexpected_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("allow_error_logs")
    handler = _ErrorRecords(None if marker is None else tuple(marker.args))
    request.node.stash[_ERROR_LOGS] = handler
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    handler.check("during teardown")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail the test itself (not its teardown) for records logged while it ran."""
    result = yield
    handler = item.stash.get(_ERROR_LOGS, None)
    if handler is not None:
        handler.check("during set-up or the test")
    return result


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


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """A real OpenID Provider (the npm ``oidc-provider``) on loopback, for one test module;
    it accepts the test hubs' callback on any 127.0.0.1 port."""
    op = OIDCProvider(tmp_path_factory.mktemp("oidc"), "/my%20hub@x/hub/oauth_callback")
    try:
        yield op.start()
    finally:
        op.stop()
