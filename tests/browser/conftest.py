"""Playwright fixtures driving Debian's Chromium (``/usr/bin/chromium``, see BROWSER.md).

Never ``playwright install``: the package drives the system browser. Without the
background-networking flags Chromium keeps trying to reach outside hosts, which our network
refuses. Tests are skipped, saying why, only when the browser is not installed.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from tests import unixaccounts
from tests.hubproc import HubProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """The browser flows run with account-backed users, as a hub run as root has them: each
    user's server runs as its own Unix account (made on first spawn, removed after)."""
    unixaccounts.require_root()
    prefix = unixaccounts.unique_prefix()
    proc = HubProcess(tmp_path_factory.mktemp("hub"),
                      extra_args=["--accounts", "create", "--account-prefix", prefix])
    try:
        yield proc.start()
    finally:
        proc.cleanup()
        unixaccounts.remove_with_prefix(prefix)


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install "
                    "chromium) to run the browser tests")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Console:
    """Errors the page reported (console errors, CSP violations, uncaught exceptions)."""

    errors: list[tuple[str, str]] = field(default_factory=list)  # (page URL, text)

    def on_message(self, page: Page, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append((page.url, message.text))

    def on_error(self, page: Page, error: Error) -> None:
        self.errors.append((page.url, f"uncaught: {error}"))

    def on(self, url_part: str) -> list[str]:
        """Errors reported while the page's URL contained ``url_part``."""
        return [text for url, text in self.errors if url_part in url]


@dataclass
class Screenshots:
    """Numbered full-page screenshots under the test's tmp dir (do look at them)."""

    directory: Path
    taken: list[Path] = field(default_factory=list)

    def __call__(self, page: Page, name: str) -> Path:
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report on the item, so fixtures can tell that a test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def screenshot(tmp_path: Path) -> Screenshots:
    directory = tmp_path / "screenshots"
    directory.mkdir()
    return Screenshots(directory)


@pytest.fixture
def page(browser: Browser, console: Console, screenshot: Screenshots,
         request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context per test; a final screenshot when the test failed."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    tab.on("console", lambda m: console.on_message(tab, m))
    tab.on("pageerror", lambda e: console.on_error(tab, e))
    try:
        yield tab
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            try:
                screenshot(tab, "failure")
            except Error:
                pass
        context.close()
