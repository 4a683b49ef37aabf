"""The hub's one typed configuration registry.

Every setting is an :class:`Option` in :data:`OPTIONS` with a type, a default and help text.
Values come from, in increasing precedence: defaults, a TOML file (``--config``),
``HIMALIA_<NAME>`` environment variables, and command-line flags. :func:`load` returns a frozen
:class:`Config`; nothing else in the hub reads the environment for settings.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote


class ConfigError(ValueError):
    """A setting has an invalid value or an unknown name."""


@dataclass(frozen=True)
class Option:
    """One setting: its name (snake_case), type, default and help text."""

    name: str
    type: type
    default: Any
    help: str
    cli: bool = True  # exposed as a --flag (lists and tables are file-only)
    items: builtins.type = str  # element type of a list option: str, or dict for a list of tables

    @property
    def env(self) -> str:
        return "HIMALIA_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("ip", str, "127.0.0.1", "Public address the proxy listens on."),
    Option("port", int, 8000, "Public port the proxy listens on."),
    Option("base_url", str, "/", "URL prefix in front of everything (e.g. /jupyter/); "
           "stored URL-encoded."),
    Option("hub_ip", str, "127.0.0.1", "Address the hub itself listens on."),
    Option("hub_port", int, 8081, "Port the hub itself listens on (0 picks a free port)."),
    Option("proxy_api_ip", str, "127.0.0.1", "Address of the proxy's REST API."),
    Option("proxy_api_port", int, 8001, "Port of the proxy's REST API (0 picks a free port)."),
    Option(
        "proxy_api_url",
        str,
        "",
        "Attach to an already-running proxy (ours or configurable-http-proxy) at this API URL "
        "instead of starting one; its token comes from CONFIGPROXY_AUTH_TOKEN.",
    ),
    Option("proxy_check_interval", float, 30.0, "Seconds between proxy route checks."),
    Option("data_dir", str, "./data", "Directory for the database, secrets and user dirs."),
    Option("db_url", str, "", "SQLAlchemy database URL (default: SQLite in the data dir)."),
    Option(
        "authenticator",
        str,
        "native",
        "Authenticator: native, pam, dummy, or a dotted path to an Authenticator class.",
    ),
    Option("spawner", str, "local", "Spawner: local, or a dotted path to a Spawner class."),
    Option("log_level", str, "INFO", "Log level: DEBUG, INFO, WARNING, ERROR."),
    Option("admin_users", list, [], "Usernames made admins at start-up.", cli=False),
    Option("admin_access", bool, False, "Whether admins may open other users' servers."),
    Option("cookie_max_age_days", float, 14.0, "Lifetime of the hub login session."),
    Option("login_max_failures", int, 5, "Failed logins allowed per window before throttling."),
    Option("login_throttle_window", float, 300.0, "Seconds of the failed-login window."),
    Option("spawn_start_timeout", float, 60.0, "Seconds a server has to start its process."),
    Option("spawn_http_timeout", float, 60.0, "Seconds a started server has to answer HTTP."),
    Option("concurrent_spawn_limit", int, 20, "Simultaneous pending spawns before 429."),
    Option("server_poll_interval", float, 10.0, "Seconds between checks that servers live."),
    Option("singleuser_cmd", list, ["himalia-singleuser"], "Command that runs a user's server.",
           cli=False),
    Option("singleuser_args", list, [], "Extra arguments for the single-user command.", cli=False),
    Option("default_url", str, "", "Landing URL of user servers (default: /lab)."),
    Option("root_dir", str, "", "Directory user servers show (default: each server's own "
           "working directory under <data_dir>/users/)."),
    Option("accounts", str, "auto", "Which Unix account runs each user's server: 'create' "
           "(account <account_prefix><name>, made on first spawn), 'existing' (the account of "
           "the same name, e.g. PAM or LDAP sites), 'hub' (the hub's own account for everyone), "
           "or 'auto': 'create' when the hub runs as root, else 'hub'."),
    Option("account_prefix", str, "jupyter-", "Prefix of the accounts made in 'create' mode."),
    Option("account_home_root", str, "/home", "Where 'create' mode makes home directories."),
    Option("account_shell", str, "/bin/bash", "Login shell of accounts made in 'create' mode."),
    Option("mem_limit", str, "", "Memory limit of each server, e.g. 512M or 2G, enforced with "
           "cgroups (empty: none). The hub refuses to start if it cannot enforce it."),
    Option("cpu_limit", float, 0.0, "CPUs each server may use, e.g. 1.5, enforced with cgroups "
           "(0: no limit). The hub refuses to start if it cannot enforce it."),
    Option("cgroup_root", str, "/sys/fs/cgroup", "Where the cgroup file system is mounted."),
    Option("api_body_limit", int, 1024 * 1024, "Largest accepted API request body, in bytes."),
    Option("token_max_age_days", float, 0.0, "Longest allowed API token lifetime (0: none)."),
    Option("create_first_admin", bool, True, "On an empty database create 'admin' with a "
           "random password, printed once."),
    Option("admin_password_file", bool, True, "Also save the first admin's password in "
           "<data_dir>/admin-password (0600); the file is removed once the password changes."),
    Option("named_server_limit_per_user", int, 0, "Named servers a user may have (running or "
           "stopped; 0: no limit); creating one more answers 400."),
    Option("roles", list, [], "Roles loaded at start-up: tables {name, description, scopes, "
           "users, groups, services}; a listed membership replaces the role's previous one.",
           cli=False, items=dict),
    Option("groups", list, [], "Groups created at start-up: tables {name, users, properties}; "
           "listed users and properties are added, nothing is removed.", cli=False, items=dict),
    Option("services", list, [], "External services: tables {name, url, api_token, admin, "
           "display, info}; the token (8+ characters) authenticates as the service.",
           cli=False, items=dict),
)

_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Config:
    """Resolved settings; attribute names are the option names."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> Config:
        for name in changes:
            if name not in _BY_NAME:
                raise ConfigError(f"unknown setting {name!r}")
        return Config({**self.values, **changes})

    @property
    def data_path(self) -> Path:
        return Path(self.values["data_dir"]).resolve()

    @property
    def database_url(self) -> str:
        return self.values["db_url"] or f"sqlite:///{self.data_path / 'himalia.sqlite'}"


def _coerce(opt: Option, raw: Any, source: str) -> Any:
    """Convert ``raw`` (a TOML value or an env/CLI string) to the option's type."""
    try:
        if opt.type is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if opt.type is list and opt.items is dict:
            return _tables(raw)
        if opt.type is list:
            if isinstance(raw, list):
                return [str(x) for x in raw]
            return [p for p in str(raw).split(",") if p]
        if opt.type in (int, float) and isinstance(raw, bool):
            raise ValueError(raw)
        return opt.type(raw)
    except (TypeError, ValueError):
        if opt.items is dict:  # never echo tables: they may hold service tokens
            raise ConfigError(f"{source}: {opt.name} must be a list of tables") from None
        kind = opt.type.__name__
        raise ConfigError(f"{source}: {opt.name} must be {kind}, got {raw!r}") from None


def _tables(raw: Any) -> list[dict[str, Any]]:
    """A list of tables: TOML ``[[name]]`` arrays, or JSON text (from the environment)."""
    if isinstance(raw, str):
        raw = json.loads(raw)  # ValueError → ConfigError in _coerce
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise ValueError(raw)
    return [dict(x) for x in raw]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per CLI-exposed option to ``parser``."""
    parser.add_argument("--config", help="TOML configuration file.")
    for opt in OPTIONS:
        if not opt.cli:
            continue
        if opt.type is bool:
            parser.add_argument(opt.flag, dest=opt.name, default=None,
                                action=argparse.BooleanOptionalAction, help=opt.help)
        else:
            parser.add_argument(opt.flag, dest=opt.name, default=None, help=opt.help)


def load(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Config:
    """Resolve every option from defaults, file, environment and parsed CLI flags."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {o.name: o.default for o in OPTIONS}
    path = config_file or (getattr(args, "config", None) if args else None)
    path = path or environ.get("HIMALIA_CONFIG")
    if path:
        values.update(_from_file(Path(path)))
    for opt in OPTIONS:
        if opt.env in environ:
            values[opt.name] = _coerce(opt, environ[opt.env], opt.env)
    if args is not None:
        for opt in OPTIONS:
            raw = getattr(args, opt.name, None)
            if raw is not None:
                values[opt.name] = _coerce(opt, raw, opt.flag)
    _validate(values)
    return Config(values)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    table = data.get("himalia", data)
    out: dict[str, Any] = {}
    for key, raw in table.items():
        opt = _BY_NAME.get(key.replace("-", "_"))
        if opt is None:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        out[opt.name] = _coerce(opt, raw, str(path))
    return out


def _validate(values: dict[str, Any]) -> None:
    base = values["base_url"]
    if not base.startswith("/"):
        base = "/" + base
    if not base.endswith("/"):
        base += "/"
    # Stored URL-encoded (a space becomes %20), as it appears in request paths and routes.
    values["base_url"] = quote(unquote(base), safe="/@:!$&'()*+,;=-._~")
    values["log_level"] = str(values["log_level"]).upper()
    for name in ("port", "hub_port", "proxy_api_port"):
        if not 0 <= values[name] <= 65535:
            raise ConfigError(f"{name} must be a port number, got {values[name]}")


def describe(options: Sequence[Option] = OPTIONS) -> str:
    """Markdown table of every option, used by the README and ``himalia config``."""
    rows = ["| setting | flag | env | default | meaning |", "|---|---|---|---|---|"]
    for o in options:
        flag = f"`{o.flag}`" if o.cli else "(file only)"
        rows.append(f"| `{o.name}` | {flag} | `{o.env}` | `{o.default!r}` | {o.help} |")
    return "\n".join(rows)
