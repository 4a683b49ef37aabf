"""The spawn options form in a real browser, on a real Slurm: a user picks a profile and a
walltime; the batch job gets them; a value over the limit is refused with the field named; the
last choice is preselected next time. Needs Slurm (``scripts/slurm_up.sh``) and root."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests import unixaccounts
from tests.browser.conftest import Console, Screenshots
from tests.browser.test_browser import log_in, wait_for_lab
from tests.hub.test_slurm import (
    _cancel_jobs_of,
    make_slurm_hub,
    require_slurm,
    squeue,
    submit_filler,
)
from tests.hubproc import HubProcess

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

PROFILES = """
[[profiles]]
name = "quick"
display_name = "Quick look"
description = "15 minutes, 1 CPU"
[profiles.options]
cpus = 1
walltime = 15

[[profiles]]
name = "session"
display_name = "Working session"
description = "Choose the walltime, up to 2 hours"
[profiles.choices.walltime]
minimum = 10
maximum = 120
default = 60
"""


@pytest.fixture(scope="module")
def slurm_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    require_slurm()
    prefix = unixaccounts.unique_prefix()
    world = unixaccounts.world_dir()
    hub = make_slurm_hub(world, PROFILES, prefix)
    try:
        yield hub.start()
    finally:
        hub.cleanup()
        _cancel_jobs_of(prefix)
        unixaccounts.remove_with_prefix(prefix)
        subprocess.run(["rm", "-rf", str(world)], check=False)


@pytest.mark.timeout(300)
def test_pick_a_profile_in_the_form(slurm_hub: HubProcess, page: Page,
                                    screenshot: Screenshots, console: Console) -> None:
    hub = slurm_hub
    name, password = hub.new_user("bf")
    server_path = f"{urlsplit(hub.url).path}user/{quote(name, safe='')}/"
    log_in(page, hub, name, password)
    page.click("#start")  # the home page's Start shows the form first
    page.wait_for_url(lambda url: "/hub/spawn" in url and "pending" not in url)
    expect(page.locator("#profile-quick")).to_be_checked()
    expect(page.locator('[data-profile="session"].hm-profile-fields')).to_be_hidden()
    page.check("#profile-session")
    walltime = page.locator('[id="session.walltime"]')
    expect(walltime).to_be_visible()
    expect(walltime).to_have_value("60")
    walltime.fill("500")
    # The browser's own max check would stop the submit: the hub must refuse it too.
    walltime.evaluate("el => el.removeAttribute('max')")
    screenshot(page, "form-over-limit")
    page.click("#start")
    expect(page.locator("#spawn-error")).to_contain_text("walltime")
    screenshot(page, "form-refused")
    assert hub.api("GET", f"/users/{name}").json()["servers"] == {}
    expect(page.locator("#profile-session")).to_be_checked()
    page.locator('[id="session.walltime"]').fill("45")
    page.click("#start")
    page.wait_for_url(lambda url: "/hub/spawn-pending/" in url or "/user/" in url)
    wait_for_lab(page, server_path)
    screenshot(page, "lab")
    model = hub.api("GET", f"/users/{name}").json()["servers"][""]
    assert model["user_options"] == {"profile": "session", "walltime": 45}
    assert squeue(model["state"]["job_id"], "%l") == "45:00"
    assert hub.api("DELETE", f"/users/{name}/server").status_code in (202, 204)
    hub.wait_for(lambda: not hub.api("GET", f"/users/{name}").json()["servers"], timeout=30)
    page.goto(hub.url + "hub/spawn")  # the last choice is preselected
    expect(page.locator("#profile-session")).to_be_checked()
    expect(page.locator('[id="session.walltime"]')).to_have_value("45")
    screenshot(page, "form-remembers")
    # The refused form's own 400 is the one error the console may show.
    assert [e for e in console.on("/hub/") if "status of 400" not in e] == []
    assert Path(screenshot.taken[0]).exists()


@pytest.mark.timeout(300)
def test_queued_start_shows_the_reason_and_cancels(slurm_hub: HubProcess, page: Page,
                                                   screenshot: Screenshots,
                                                   console: Console) -> None:
    hub = slurm_hub
    name, password = hub.new_user("bq")
    fillers = submit_filler()
    try:
        log_in(page, hub, name, password)
        page.goto(hub.url + "hub/spawn")
        page.click("#start")  # the first profile, its defaults
        page.wait_for_url(lambda url: "/hub/spawn-pending/" in url)
        expect(page.locator("#progress-message")).to_contain_text("is queued (PENDING, reason:",
                                                                  timeout=30_000)
        screenshot(page, "queued")
        job = hub.api("GET", f"/users/{name}").json()["servers"][""]["state"]["job_id"]
        page.click("#cancel-start")
        page.wait_for_url(lambda url: url.endswith("/hub/home"))
        hub.wait_for(lambda: squeue(job) in ("", "CANCELLED"), timeout=30)
        assert hub.api("GET", f"/users/{name}").json()["servers"] == {}
        screenshot(page, "home-after-cancel")
    finally:
        subprocess.run(["scancel", *fillers], check=False, timeout=30)
    assert console.on("/hub/") == []
