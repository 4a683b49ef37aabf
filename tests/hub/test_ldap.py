"""LDAP sign-in against a real OpenLDAP slapd (started by scripts/test-setup.sh from
tests/engines/ldap_up.sh, with a test CA): DN-template bind over LDAPS, search-then-bind over
StartTLS with a group search, memberOf groups for allowed/admin/blocked rules and
manage_groups, injection characters in names, and an unreachable directory (a 503, quickly)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.hubproc import HubProcess

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ldap")]
ENV_FILE = Path(os.environ.get("HIMALIA_TEST_LDAP_ENV", "/tmp/himalia-test/ldap/env"))


@pytest.fixture(scope="module")
def ldap() -> dict[str, str]:
    if not ENV_FILE.exists():
        pytest.skip(f"{ENV_FILE} missing (scripts/test-setup.sh starts slapd as root)")
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    env = {k: v for k, v in pairs}
    try:
        requests.utils.urlparse(env["LDAPS_URL"])
        with socket.create_connection(("127.0.0.1", int(env["LDAPS_URL"].rsplit(":", 1)[1])),
                                      timeout=2):
            pass
    except OSError:
        pytest.skip("slapd from scripts/test-setup.sh is not running")
    return env


def _ldap_env(ldap: dict[str, str], **more: str) -> dict[str, str]:
    return {"HIMALIA_AUTHENTICATOR": "ldap", "HIMALIA_LDAP_CA_FILE": ldap["LDAP_CACERT"],
            "HIMALIA_LOGIN_MAX_FAILURES": "100", **more}


@pytest.fixture(scope="module")
def hub(ldap: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    env = _ldap_env(ldap, HIMALIA_LDAP_URL=ldap["LDAPS_URL"],
                    HIMALIA_LDAP_BIND_DN_TEMPLATE=ldap["LDAP_BIND_DN_TEMPLATE"],
                    HIMALIA_ALLOWED_GROUPS="students", HIMALIA_ADMIN_GROUPS="hub-admins",
                    HIMALIA_BLOCKED_USERS="bob", HIMALIA_MANAGE_GROUPS="1")
    proc = HubProcess(tmp_path_factory.mktemp("ldaphub"), env=env)
    try:
        yield proc.start()
    finally:
        proc.cleanup()


def _post_login(hub: HubProcess, name: str, password: str) -> requests.Response:
    s = requests.Session()
    s.get(hub.url + "hub/login", timeout=10)
    return s.post(hub.url + "hub/login", allow_redirects=False, timeout=30,
                  data={"username": name, "password": password,
                        "_xsrf": s.cookies.get("_xsrf") or ""})


def _no_user(hub: HubProcess, name: str) -> None:
    assert hub.api("GET", f"/users/{requests.utils.quote(name, safe='')}").status_code == 404


def test_login_page_has_the_password_form_only(hub: HubProcess) -> None:
    page = requests.get(hub.url + "hub/login", timeout=10).text
    assert 'name="password"' in page and 'id="login-service"' not in page


def test_template_bind_over_ldaps_with_member_of_groups(hub: HubProcess) -> None:
    s = hub.login("alice", "alice-pw")
    assert s.get(hub.url + "hub/home", allow_redirects=False, timeout=10).status_code == 200
    model = hub.api("GET", "/users/alice").json()
    assert model["groups"] == ["students"] and model["admin"] is False
    hub.login("carol", "carol-pw")  # not in allowed_groups, but in admin_groups
    model = hub.api("GET", "/users/carol").json()
    assert model["admin"] is True and sorted(model["groups"]) == ["hub-admins", "staff"]
    assert "alice-pw" not in hub.log_text() and "carol-pw" not in hub.log_text()


def test_blocked_user_and_wrong_password_are_refused(hub: HubProcess) -> None:
    r = _post_login(hub, "bob", "bob-pw")
    assert r.status_code == 403 and "not allowed to use this hub" in r.text
    _no_user(hub, "bob")
    r = _post_login(hub, "alice", "wrong-pw")
    assert r.status_code == 403 and "Invalid username or password" in r.text
    assert "bob-pw" not in hub.log_text() and "wrong-pw" not in hub.log_text()


@pytest.mark.parametrize("name", ["*", "alice)(uid=*", "alice,ou=people", "alice\\2a",
                                  "cn=admin,dc=hub,dc=test", "*)(|(uid=*", "carol+uid=alice"])
def test_injection_characters_never_sign_in(hub: HubProcess, name: str) -> None:
    r = _post_login(hub, name, "alice-pw")
    assert r.status_code in (400, 403) and "himalia-session" not in r.cookies
    assert "text/html" in r.headers["Content-Type"]
    _no_user(hub, name)
    assert "alice-pw" not in hub.log_text()


def test_empty_password_is_never_an_anonymous_bind(hub: HubProcess) -> None:
    r = _post_login(hub, "alice", "")
    assert r.status_code == 403 and "himalia-session" not in r.cookies


def test_search_then_bind_over_starttls_with_group_search(
        ldap: dict[str, str], make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub(env=_ldap_env(
        ldap, HIMALIA_LDAP_URL=ldap["LDAP_URL"], HIMALIA_LDAP_STARTTLS="1",
        HIMALIA_LDAP_SEARCH_BASE=ldap["LDAP_USER_BASE"],
        HIMALIA_LDAP_BIND_DN=ldap["LDAP_READER_DN"],
        HIMALIA_LDAP_BIND_PASSWORD=ldap["LDAP_READER_PW"],
        HIMALIA_LDAP_GROUP_ATTRIBUTE="", HIMALIA_LDAP_GROUP_SEARCH_BASE=ldap["LDAP_GROUP_BASE"],
        HIMALIA_ALLOWED_GROUPS="staff", HIMALIA_MANAGE_GROUPS="1"))
    hub.login("carol", "carol-pw")
    assert sorted(hub.api("GET", "/users/carol").json()["groups"]) == ["hub-admins", "staff"]
    r = _post_login(hub, "alice", "alice-pw")  # a real account, outside allowed_groups
    assert r.status_code == 403 and "not allowed" in r.text
    _no_user(hub, "alice")
    assert ldap["LDAP_READER_PW"] not in hub.log_text()


def test_unreachable_directory_is_a_quick_clear_503(
        ldap: dict[str, str], make_hub: Callable[..., HubProcess]) -> None:
    with socket.socket() as hole:  # accepts connections, never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        hub = make_hub(env=_ldap_env(
            ldap, HIMALIA_LDAP_URL=f"ldaps://127.0.0.1:{hole.getsockname()[1]}",
            HIMALIA_LDAP_TIMEOUT="1", HIMALIA_LDAP_BIND_DN_TEMPLATE=ldap["LDAP_BIND_DN_TEMPLATE"]))
        started = time.monotonic()
        r = _post_login(hub, "alice", "alice-pw")
        assert time.monotonic() - started < 8
    assert r.status_code == 503 and "Sign-in is unavailable" in r.text
    _no_user(hub, "alice")
    assert "alice-pw" not in hub.log_text()
