"""The product's core loop in headless Chromium, against a real hub, proxy and JupyterLab.

Log in → Start → progress page → JupyterLab at ``/user/<name>/lab`` → new notebook, run
``print(6*7)``, see ``42`` → back to ``/hub/home`` → Stop → the page shows the server stopped.
A screenshot of each step is saved under the test's tmp dir (``screenshots/``).
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.browser.conftest import Console, Screenshots
from tests.hubproc import HubProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SPAWN_TIMEOUT_MS = 120_000


def log_in(page: Page, hub: HubProcess, name: str, password: str) -> None:
    page.goto(hub.url)
    expect(page).to_have_url(re.compile(r"/hub/login\?next="))
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(r"/hub/home$"))


def progress_screenshot(page: Page, screenshot: Screenshots) -> None:
    """Screenshot the progress page once the bar moved (unless it already forwarded)."""
    try:
        expect(page.locator("#progress")).not_to_have_attribute("aria-valuenow", "0",
                                                                timeout=15_000)
        page.wait_for_timeout(700)  # Bootstrap animates the bar's width
    except (AssertionError, PlaywrightError):
        pass
    if "/hub/spawn-pending/" in page.url:
        screenshot(page, "progress")


def wait_for_lab(page: Page, server_path: str) -> None:
    page.wait_for_url(re.compile(re.escape(server_path) + "lab"), timeout=SPAWN_TIMEOUT_MS)
    expect(page.locator(".jp-LauncherCard").first).to_be_visible(timeout=SPAWN_TIMEOUT_MS)


def stop_server(hub: HubProcess, name: str) -> None:
    path = f"/users/{quote(name, safe='')}"
    hub.api("DELETE", path + "/server")
    hub.wait_for(lambda: hub.api("GET", path).json()["servers"] == {}, timeout=60)


def run_notebook_cell(page: Page, code: str, expected: str) -> None:
    """Open a new Python notebook from the launcher, run ``code`` in its first cell and wait
    for ``expected`` in the output.

    Under heavy load JupyterLab's front end can drop a cell typed while the new notebook is
    still settling (it runs an empty cell instead); that is JupyterLab's race, not the hub's,
    so a run whose cell came back empty is typed once more.
    """
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").last
    expect(notebook.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
           ).to_be_attached(timeout=SPAWN_TIMEOUT_MS)
    output = notebook.locator(".jp-OutputArea-output").filter(has_text=expected).first
    for attempt in range(2):
        editor = notebook.locator(".jp-Cell .cm-content").first
        editor.click()
        expect(editor).to_be_focused()
        page.keyboard.press("Control+a")
        page.keyboard.type(code)
        expect(editor).to_have_text(code)
        page.keyboard.press("Shift+Enter")
        try:
            expect(output).to_be_visible(timeout=45_000)
            return
        except AssertionError:
            if attempt or editor.inner_text().strip() == code:
                raise  # the code was there and still gave no output: a real failure


@pytest.mark.timeout(300)
def test_login_start_lab_notebook_stop(hub: HubProcess, page: Page, screenshot: Screenshots,
                                       console: Console) -> None:
    name, password = hub.new_user("br")
    server_path = f"{urlsplit(hub.url).path}user/{quote(name, safe='')}/"

    log_in(page, hub, name, password)
    expect(page.locator("#server-status")).to_have_text("Your server is stopped.")
    screenshot(page, "home-stopped")

    page.click("#start")
    page.wait_for_url(lambda url: "/hub/spawn-pending/" in url or "/user/" in url)
    progress_screenshot(page, screenshot)

    wait_for_lab(page, server_path)
    screenshot(page, "lab")

    # The kernel runs as the user's own Unix account, not as the hub's (root).
    account = hub.extra_args[hub.extra_args.index("--account-prefix") + 1] + name
    run_notebook_cell(page, "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name, 6*7)",
                      f"{account} 42")
    screenshot(page, "notebook-42")

    page.goto(hub.url + "hub/home")
    expect(page.locator("#server-status")).to_have_text("Your server is running.")
    expect(page.locator("#my-server")).to_have_attribute("href", server_path)
    screenshot(page, "home-running")

    page.click("#stop")
    expect(page.locator("#server-status")).to_have_text("Your server is stopped.",
                                                         timeout=60_000)
    expect(page.locator("#start")).to_be_visible()
    screenshot(page, "home-stopped-again")
    page.reload()
    expect(page.locator("#server-card")).to_have_attribute("data-state", "stopped")

    assert hub.api("GET", f"/users/{quote(name, safe='')}").json()["servers"] == {}
    assert console.on("/hub/") == []  # no CSP violations or script errors on hub pages


@pytest.mark.timeout(300)
def test_not_running_page_starts_the_server(hub: HubProcess, page: Page,
                                            screenshot: Screenshots, console: Console) -> None:
    """``/user/<name>/lab`` of a stopped server: a 424 page (no loop), Start, back to /lab."""
    name, password = hub.new_user("nr")
    server_path = f"{urlsplit(hub.url).path}user/{quote(name, safe='')}/"
    log_in(page, hub, name, password)

    response = page.goto(f"{hub.url}user/{quote(name, safe='')}/lab")
    assert response is not None and response.status == 424
    expect(page.locator("#not-running")).to_have_attribute("data-state", "stopped")
    screenshot(page, "not-running")

    page.click("#start")
    page.wait_for_url(lambda url: "/hub/spawn-pending/" in url or "/user/" in url)
    progress_screenshot(page, screenshot)
    try:
        wait_for_lab(page, server_path)
        screenshot(page, "lab-after-start")
    finally:
        stop_server(hub, name)
    # The 424 page itself is reported as a failed load; anything else is a real error.
    assert [e for e in console.on("/hub/") if "status of 424" not in e] == []
