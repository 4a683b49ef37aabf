"""OpenID Connect sign-in in headless Chromium: the hub's "Sign in with" button → the real
provider's own login form → back on ``/hub/home`` → Start → the server runs → Stop."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Console, Screenshots
from tests.hubproc import HubProcess
from tests.oidc_provider import OIDCProvider, hub_env

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("oidc-browser")]


@pytest.fixture(scope="module")
def oidc_hub(provider: OIDCProvider, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[HubProcess]:
    env = hub_env(provider, scopes="openid,profile,groups")
    proc = HubProcess(tmp_path_factory.mktemp("oidchub"), env=env)
    try:
        yield proc.start()
    finally:
        proc.cleanup()


def test_sign_in_with_the_provider_then_start_and_stop(
        oidc_hub: HubProcess, page: Page, screenshot: Screenshots, console: Console) -> None:
    hub = oidc_hub
    page.goto(hub.url)
    expect(page).to_have_url(re.compile(r"/hub/login\?next="))
    expect(page.locator("#login-form")).to_have_count(0)
    screenshot(page, "hub-login")
    page.click("text=Sign in with Test IdP")

    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:\d+/interaction/"))
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-pw")
    screenshot(page, "provider-login")
    page.click("button[type=submit]")

    page.wait_for_url(re.compile(r"/hub/home$"))
    expect(page.locator("#server-status")).to_have_text("Your server is stopped.")
    screenshot(page, "home-stopped")
    page.click("#start")
    page.wait_for_url(re.compile(r"/user/alice/"), timeout=60_000)
    page.goto(hub.url + "hub/home")
    expect(page.locator("#server-status")).to_have_text("Your server is running.")
    screenshot(page, "home-running")
    page.click("#stop")
    expect(page.locator("#server-status")).to_have_text("Your server is stopped.",
                                                         timeout=60_000)
    assert hub.api("GET", "/users/alice").json()["name"] == "alice"
    assert console.on("/hub/") == []
