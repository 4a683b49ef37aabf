"""RBAC end to end: roles and groups from the config file and the CLI, filtered scopes,
privilege escalation (SECURITY.md 9), and the start-up errors of a bad configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hub.config import ConfigError, load
from hub.db.database import check_schema, make_engine, make_sessionmaker, transaction
from hub.services import rbac, tokens, users
from tests.hub.apitools import err, grant_role, unique, write_config
from tests.hubproc import HubProcess

MakeHub = Callable[..., HubProcess]

CONFIG: dict[str, Any] = {
    "roles": [
        {"name": "teaching", "description": "Teachers of the class",
         "scopes": ["read:users!group=class", "servers!group=class", "list:users"],
         "users": ["tina"], "groups": ["teachers"]},
        {"name": "monitor", "scopes": ["read:hub", "list:groups"], "users": ["mo"]},
    ],
    "groups": [
        {"name": "class", "users": ["sam", "sue"], "properties": {"term": "fall"}},
        {"name": "teachers", "users": ["ted"]},
    ],
}


@pytest.fixture(scope="module")
def rhub(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.hubproc import running

    data = tmp_path_factory.mktemp("rbac")
    config = write_config(data.parent / f"{data.name}.toml", **CONFIG)
    yield from running(data, extra_args=["--config", str(config)])


def _scopes(hub: HubProcess, user: str) -> set[str]:
    return set(hub.api("GET", "/user", token=hub.make_token(user)).json()["scopes"])


def test_config_roles_and_groups_are_loaded(rhub: HubProcess) -> None:
    cls = rhub.api("GET", "/groups/class").json()
    assert cls["users"] == ["sam", "sue"] and cls["properties"] == {"term": "fall"}
    assert rhub.api("GET", "/groups/teachers").json()["roles"] == ["teaching"]
    tina = rhub.api("GET", "/users/tina").json()
    assert tina["roles"] == ["user", "teaching"]
    assert rhub.api("GET", "/users/ted").json()["roles"] == ["user", "teaching"]
    assert "read:users!group=class" in _scopes(rhub, "tina")
    assert "read:users!group=class" in _scopes(rhub, "ted")  # through the group
    assert "read:users!group=class" not in _scopes(rhub, "sam")


def test_group_filtered_role_reaches_members_only(rhub: HubProcess) -> None:
    token = rhub.make_token("tina")
    assert rhub.api("GET", "/users/sam", token=token).json()["name"] == "sam"
    outsider, _ = rhub.new_user("out")
    # list:users gives read:users:name only: the outsider's model is trimmed (as JupyterHub)
    assert rhub.api("GET", f"/users/{outsider}", token=token).json() == {
        "kind": "user", "name": outsider, "admin": False}
    listed = {u["name"] for u in rhub.api("GET", "/users", token=token,
                                          params={"limit": 200}).json()}
    assert {"sam", "sue"} <= listed  # full models for class members...
    full = [u for u in rhub.api("GET", "/users", token=token, params={"limit": 200}).json()
            if "created" in u]
    assert {u["name"] for u in full} <= {"sam", "sue", "tina"}  # ...names only for the rest
    # tina may list users, so she sees that the outsider exists: 403, not 404
    err(rhub.api("POST", f"/users/{outsider}/server", token=token), 403)


def test_filtered_scopes_never_authorize_bulk_or_new_resources(rhub: HubProcess) -> None:
    boss, _ = rhub.new_user("boss")
    grant_role(rhub, unique("clsadmin"), ["admin:users!group=class", "admin:groups!group=class"],
               users=(boss,))
    token = rhub.make_token(boss)
    err(rhub.api("POST", "/users", token=token, json={"usernames": [unique("n")]}), 403)
    err(rhub.api("POST", f"/users/{unique('n')}", token=token), 403)
    err(rhub.api("POST", "/groups", token=token, json={"groups": [unique("g")]}), 403)
    assert rhub.api("GET", "/users/sue", token=token).status_code == 200


def test_only_admins_grant_or_modify_admin(rhub: HubProcess) -> None:
    deputy, _ = rhub.new_user("dep")
    grant_role(rhub, unique("useradmin"), ["admin:users"], users=(deputy,))
    token = rhub.make_token(deputy)
    victim, _ = rhub.new_user("vic")
    err(rhub.api("PATCH", f"/users/{victim}", token=token, json={"admin": True}), 403)
    err(rhub.api("PATCH", f"/users/{deputy}", token=token, json={"admin": True}), 403)
    err(rhub.api("PATCH", "/users/admin", token=token, json={"name": "admin2"}), 403)
    err(rhub.api("DELETE", "/users/admin", token=token), 403)
    err(rhub.api("POST", "/users", token=token, json={"usernames": [unique("a")],
                                                      "admin": True}), 403)
    created = rhub.api("POST", "/users", token=token, json={"usernames": [unique("ok")]})
    assert created.status_code == 201 and created.json()[0]["admin"] is False
    assert rhub.api("GET", f"/users/{deputy}").json()["admin"] is False


def test_users_cannot_give_themselves_roles(rhub: HubProcess) -> None:
    user, _ = rhub.new_user("self")
    token = rhub.make_token(user)
    # a token never exceeds its owner: asking for a role the user lacks is refused
    err(rhub.api("POST", f"/users/{user}/tokens", token=token, json={"roles": ["teaching"]}),
        403)
    err(rhub.api("POST", f"/users/{user}/tokens", token=token, json={"roles": ["admin"]}), 403)
    err(rhub.api("POST", f"/users/{user}/tokens", token=token, json={"roles": ["nope-x"]}), 400)
    err(rhub.api("POST", f"/users/{user}/tokens", token=token,
                 json={"scopes": ["admin:users"]}), 403)
    # there is no API to assign roles, and group membership needs `groups` on the group
    err(rhub.api("POST", "/groups/teachers/users", token=token, json={"users": [user]}), 404)
    err(rhub.api("PATCH", f"/users/{user}", token=token, json={"admin": True}), 403)
    assert rhub.api("GET", f"/users/{user}").json()["roles"] == ["user"]


def test_roles_on_tokens_resolve_to_scopes(rhub: HubProcess) -> None:
    token = rhub.make_token("tina")
    r = rhub.api("POST", "/users/tina/tokens", token=token, json={"roles": ["teaching"]})
    assert r.status_code == 201, r.text
    assert "read:users!group=class" in r.json()["scopes"] and r.json()["roles"] == []
    narrow = r.json()["token"]
    err(rhub.api("GET", "/users/tina/tokens", token=narrow), 403)  # no `read:tokens` scope
    assert rhub.api("GET", "/users/sam", token=narrow).status_code == 200
    empty = rhub.api("POST", "/users/tina/tokens", token=token, json={"scopes": []}).json()
    assert empty["scopes"] == []
    err(rhub.api("GET", "/users/tina", token=empty["token"]), 404)


def test_cli_roles_apply_to_the_running_hub(rhub: HubProcess) -> None:
    user, _ = rhub.new_user("cli")
    token = rhub.make_token(user)
    err(rhub.api("GET", "/info", token=token), 403)
    role = unique("hubreader")
    grant_role(rhub, role, ["read:hub"], users=(user,))
    # another process changed the database: the hub sees it within its identity cache TTL
    rhub.wait_for(lambda: rhub.api("GET", "/info", token=token).status_code == 200, 10)
    assert role in rhub.api("GET", f"/users/{user}").json()["roles"]
    done = rhub.cli("roles", "revoke", role, "--user", user)
    assert done.returncode == 0, done.stderr
    rhub.wait_for(lambda: rhub.api("GET", "/info", token=token).status_code == 403, 10)
    err(rhub.api("GET", "/info", token=token), 403)
    listed = rhub.cli("roles", "list")
    assert "teaching: read:users!group=class" in listed.stdout and "admin (built-in)" in \
        listed.stdout
    assert rhub.cli("roles", "grant", "admin", "--user", user).returncode == 1
    assert rhub.cli("roles", "add", "token", "--scopes", "self").returncode == 1
    assert rhub.cli("roles", "grant", role).returncode == 2


def test_cli_groups(rhub: HubProcess) -> None:
    name = unique("cg")
    user, _ = rhub.new_user("cgu")
    assert rhub.cli("groups", "add", name, "--users", user).returncode == 0
    assert rhub.api("GET", f"/groups/{name}").json()["users"] == [user]
    assert rhub.cli("groups", "add", name).returncode == 1
    assert rhub.cli("groups", "remove-users", name, user).returncode == 0
    assert rhub.cli("groups", "add-users", name, "no-such-user-q").returncode == 1
    assert f"{name}: (no members)" in rhub.cli("groups", "list").stdout
    assert rhub.cli("groups", "remove", name).returncode == 2  # no --yes, no terminal
    assert rhub.cli("groups", "remove", name, "--yes").returncode == 0
    err(rhub.api("GET", f"/groups/{name}"), 404)


def test_loading_is_idempotent_and_membership_follows_the_config(
        make_hub: MakeHub, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = write_config(tmp_path / "a.toml", **CONFIG)
    hub = make_hub(data_dir=data, extra_args=["--config", str(first)])
    hub.cli("groups", "add-users", "class", "tina")  # API/CLI additions to groups survive
    hub.stop()
    changed: dict[str, Any] = {
        "roles": [{"name": "teaching", "scopes": ["read:users!group=class"], "users": ["ann"]},
                  {"name": "monitor", "scopes": ["read:hub", "list:groups"], "users": ["mo"]}],
        "groups": [{"name": "class", "users": ["sam"], "properties": {"room": 4}}],
    }
    second = write_config(tmp_path / "b.toml", **changed)
    hub.extra_args = ["--config", str(second)]
    hub.start()
    roles = hub.cli("roles", "list", "--json")
    teaching = next(r for r in json.loads(roles.stdout) if r["name"] == "teaching")
    assert teaching["users"] == ["ann"]  # listed users replace the previous holders
    assert teaching["groups"] == ["teachers"]  # groups were not listed: left as they were
    assert teaching["scopes"] == ["read:users!group=class"]
    cls = hub.api("GET", "/groups/class").json()
    assert cls["users"] == ["sam", "sue", "tina"]  # groups only ever gain members
    assert cls["properties"] == {"term": "fall", "room": 4}
    assert len(hub.api("GET", "/groups", params={"limit": 200}).json()) == 2


@pytest.mark.parametrize("settings,message", [
    ({"roles": [{"name": "r1x", "scopes": ["read:userz"]}]}, "unknown scope 'read:userz'"),
    ({"roles": [{"name": "admin", "scopes": ["self"]}]}, "reserved for a built-in role"),
    ({"roles": [{"name": "r1x", "scopes": ["self"], "colour": "red"}]}, "unknown keys colour"),
    ({"roles": [{"name": "r1x", "scopes": ["self"], "services": ["ghost"]}]},
     "unknown services ghost"),
    ({"roles": [{"name": "r1x", "scopes": ["read:users!group="]}]}, "malformed scope filter"),
    ({"groups": [{"name": "g1", "users": ["a/b"]}]}, "slashes"),
    ({"services": [{"name": "s1", "api_token": "short"}]}, "at least 8 characters"),
    ({"services": [{"name": "s1", "url": "ftp://x"}]}, "http(s) URL"),
    ({"services": [{"name": "bad name"}]}, "invalid service name"),
])
def test_bad_config_is_a_clear_startup_error(tmp_path: Path, settings: dict[str, Any],
                                             message: str) -> None:
    config = write_config(tmp_path / "bad.toml", mock_mode=None, **settings)
    done = subprocess.run(
        [sys.executable, "-m", "hub", "--config", str(config), "--data-dir", str(tmp_path / "d"),
         "--port", "0", "--hub-port", "0", "--proxy-api-port", "0"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "himalia: error: invalid roles, groups or services setting" in done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d" / "proxy.json").exists()  # failed before starting the proxy


def test_load_config_unit(tmp_path: Path) -> None:
    """The loader without a hub: services get their scopes; the token is stored hashed."""
    cfg = load(environ={}).replace(
        data_dir=str(tmp_path), services=[{"name": "cull", "api_token": "s3cret-token-1"}],
        roles=[{"name": "culler", "scopes": ["list:users", "admin:servers"],
                "services": ["cull"]}])
    engine = make_engine(cfg.database_url)
    check_schema(engine)
    db = make_sessionmaker(engine)
    with transaction(db) as session:
        services = rbac.load_config(session, cfg)
    with transaction(db) as session:
        again = rbac.load_config(session, cfg)  # idempotent: same token row, no clash
    assert services["cull"].roles == again["cull"].roles == ("culler",)
    assert {"list:users", "admin:servers", "servers"} <= services["cull"].scopes
    assert "s3cret-token-1" not in repr(services["cull"])
    raw = (tmp_path / "himalia.sqlite").read_bytes()
    assert b"s3cret-token-1" not in raw
    # tokens may move between services; one already used by a user is refused
    swapped = cfg.replace(services=[{"name": "cull", "api_token": "other-token-22"},
                                    {"name": "new", "api_token": "s3cret-token-1"}])
    with transaction(db) as session:
        rbac.load_config(session, swapped)
    with transaction(db) as session:
        user = users.create(session, "ann")
        tokens.create(session, user_id=user.id, secret="users-token-333")
    clash = cfg.replace(services=[{"name": "cull", "api_token": "users-token-333"}])
    with pytest.raises(rbac.RBACError, match="already in use"), transaction(db) as session:
        rbac.load_config(session, clash)
    engine.dispose()


def test_table_settings_from_the_environment_and_errors() -> None:
    """Lists of tables come from TOML arrays, or JSON in HIMALIA_*; errors never echo them."""
    env = {"HIMALIA_GROUPS": json.dumps([{"name": "class", "users": ["a"]}])}
    assert load(environ=env).groups == [{"name": "class", "users": ["a"]}]
    for bad in ("not json", json.dumps({"name": "x"}), json.dumps(["x"])):
        secret = "tok-" + bad
        with pytest.raises(ConfigError) as info:
            load(environ={"HIMALIA_SERVICES": secret})
        assert "services must be a list of tables" in str(info.value)
        assert secret not in str(info.value)
