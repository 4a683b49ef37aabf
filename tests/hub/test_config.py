"""The configuration registry: precedence, type checking, and that every option is documented."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from hub import config
from hub.config import OPTIONS, Config, ConfigError, describe, load

README = Path(__file__).resolve().parents[2] / "README.md"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(list(argv))


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "himalia.toml"
    path.write_text(body)
    return path


def test_defaults() -> None:
    cfg = load(parse(), environ={})
    for opt in OPTIONS:
        assert getattr(cfg, opt.name) == opt.default, opt.name


def test_precedence_defaults_file_env_cli(tmp_path: Path) -> None:
    path = str(write(tmp_path, "port = 1000\nhub_port = 1001\nproxy_api_port = 1002\n"))
    env = {"HIMALIA_HUB_PORT": "2001", "HIMALIA_PROXY_API_PORT": "2002"}
    cfg = load(parse("--config", path, "--proxy-api-port", "3002"), environ=env)
    assert (cfg.port, cfg.hub_port, cfg.proxy_api_port) == (1000, 2001, 3002)
    assert load(parse(), environ={}).port == 8000


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[himalia]\nlog-level = 'debug'\nadmin_users = ['ann', 'bo']\n")
    cfg = load(None, environ={"HIMALIA_CONFIG": str(path)})
    assert cfg.log_level == "DEBUG"
    assert cfg.admin_users == ["ann", "bo"]


def test_types_are_converted() -> None:
    env = {"HIMALIA_ADMIN_ACCESS": "yes", "HIMALIA_SPAWN_START_TIMEOUT": "2.5",
           "HIMALIA_ADMIN_USERS": "ann,bo", "HIMALIA_HUB_PORT": "0"}
    cfg = load(parse("--no-admin-access", "--port", "9000"), environ=env)
    assert cfg.admin_access is False  # the flag beats the environment
    assert cfg.spawn_start_timeout == 2.5
    assert cfg.admin_users == ["ann", "bo"]
    assert (cfg.port, cfg.hub_port) == (9000, 0)


@pytest.mark.parametrize("body", [
    "port = 'abc'",
    "port = true",
    "admin_access = 'maybe'",
    "spawn_start_timeout = 'soon'",
    "port = 70000",
])
def test_bad_values_in_file(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError):
        load(None, environ={}, config_file=str(write(tmp_path, body)))


@pytest.mark.parametrize(("name", "value"), [
    ("HIMALIA_PORT", "abc"), ("HIMALIA_ADMIN_ACCESS", "maybe"), ("HIMALIA_HUB_PORT", "-1"),
    ("HIMALIA_COOKIE_MAX_AGE_DAYS", "two"),
])
def test_bad_values_in_environment(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name.removeprefix("HIMALIA_").lower()):
        load(None, environ={name: value})


def test_bad_value_on_command_line() -> None:
    with pytest.raises(ConfigError, match="--port"):
        load(parse("--port", "eighty"), environ={})


def test_unknown_setting_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 8000\nprot = 8001\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load(None, environ={}, config_file=str(path))


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(None, environ={}, config_file=str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError):
        load(None, environ={}, config_file=str(write(tmp_path, "port = = 1")))


def test_unknown_environment_variables_are_ignored() -> None:
    assert load(None, environ={"HIMALIA_NO_SUCH_THING": "1"}).port == 8000


def test_base_url_is_normalized_and_encoded() -> None:
    assert load(parse("--base-url", "my hub@x"), environ={}).base_url == "/my%20hub@x/"
    assert load(parse("--base-url", "/a%20b/"), environ={}).base_url == "/a%20b/"


def test_replace_and_attributes() -> None:
    cfg = load(None, environ={})
    assert cfg.replace(port=1).port == 1
    with pytest.raises(ConfigError):
        cfg.replace(no_such=1)
    with pytest.raises(AttributeError):
        _ = cfg.no_such  # type: ignore[attr-defined]
    assert Config(data_dir="/d", db_url="").database_url == "sqlite:////d/himalia.sqlite"


def test_config_fields_are_the_option_list() -> None:
    """The typed fields mypy checks and the options the CLI, environment and docs use are one
    list: same names, same order, same types."""
    hints = typing.get_type_hints(Config)
    assert [f.name for f in dataclasses.fields(Config)] == [o.name for o in OPTIONS]
    expected: dict[tuple[type, type], Any] = {
        (str, str): str, (int, str): int, (float, str): float, (bool, str): bool,
        (list, str): list[str], (list, dict): list[dict[str, Any]],
    }
    for opt in OPTIONS:
        assert hints[opt.name] == expected[(opt.type, opt.items)], opt.name
        assert getattr(Config(), opt.name) == opt.default, opt.name


def test_a_setting_of_the_wrong_type_is_refused() -> None:
    cfg = load(None, environ={})
    with pytest.raises(ConfigError, match="port must be int"):
        cfg.replace(port="80")
    with pytest.raises(ConfigError, match="admin_users must be a list of strings"):
        Config(admin_users="ann")  # type: ignore[arg-type]
    assert cfg.replace(spawn_start_timeout=5).spawn_start_timeout == 5  # an int is a float


def test_a_field_that_is_no_setting_fails_at_definition() -> None:
    """What keeps the registry one list: a field with an unsupported type, or declared without
    setting(), makes the option list refuse to build (the hub cannot even import)."""

    @dataclasses.dataclass(frozen=True)
    class Broken(Config):
        extra: tuple[int, ...] = config.setting((1,), "An unsupported type.")

    with pytest.raises(TypeError, match=r"Config\.extra"):
        config._options(Broken)


def test_list_defaults_are_not_shared() -> None:
    one, two = load(None, environ={}), load(None, environ={})
    one.admin_users.append("mallory")
    assert two.admin_users == [] and Config().admin_users == []


def test_every_option_is_well_formed() -> None:
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)
    for opt in OPTIONS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", opt.name), opt.name
        assert opt.help.strip(), f"{opt.name} has no help text"
        assert opt.type in (str, int, float, bool, list), opt.name
        assert isinstance(opt.default, opt.type), opt.name


def test_describe_has_one_row_per_option() -> None:
    rows = describe().splitlines()[2:]
    assert len(rows) == len(OPTIONS)
    for opt, row in zip(OPTIONS, rows, strict=True):
        assert f"`{opt.name}`" in row and opt.env in row and opt.help in row


def test_every_option_is_documented_in_the_readme() -> None:
    """The README's settings table is `himalia config`'s output; a stale row fails too."""
    readme = README.read_text() if README.exists() else ""
    missing = [o.name for o in OPTIONS if describe([o]).splitlines()[-1] not in readme]
    assert not missing, (
        f"README.md lacks (or has a stale row for) {', '.join(missing)}: "
        "paste the output of `himalia config` into its settings table"
    )
