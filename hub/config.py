"""The hub's one typed configuration registry.

Every setting is a field of the frozen dataclass :class:`Config`, declared with
:func:`setting` (default, help text, whether it has a ``--flag``). The field's annotation is its
type, so ``cfg.prot`` or ``cfg.port + "x"`` fails ``mypy``. :data:`OPTIONS` — what the CLI,
the environment, the README table and ``himalia config`` use — is derived from those fields, and
refuses at import an annotation it cannot fill from TOML, environment and flags (``str``,
``int``, ``float``, ``bool``, ``list[str]``, ``list[dict[str, Any]]``) or a default of the wrong
type. **Adding an option** is one line in :class:`Config` (then ``scripts/update_readme.py``).

Values come from, in increasing precedence: defaults, a TOML file (``--config``),
``HIMALIA_<NAME>`` environment variables, and command-line flags. :func:`load` returns a
:class:`Config`; nothing else in the hub reads the environment for settings.
"""

# setting() returns a dataclass field (a fresh list per instance), not a shared mutable default:
# ruff: noqa: RUF009

from __future__ import annotations

import argparse
import builtins
import dataclasses
import json
import os
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has an invalid value or an unknown name."""


def setting(default: T, help: str, *, cli: bool = True) -> T:
    """Declare a :class:`Config` field: its default and help text; ``cli=False`` for options
    that only a file (or the environment) can set, such as lists and tables."""
    meta = {"help": help, "cli": cli}
    if isinstance(default, list):
        items = list(default)
        return cast(T, field(default_factory=lambda: list(items), metadata=meta))
    return cast(T, field(default=default, metadata=meta))


@dataclass(frozen=True)
class Config:
    """Resolved settings, one typed field per option (see the module docstring)."""

    ip: str = setting("127.0.0.1", "Public address the proxy listens on.")
    port: int = setting(8000, "Public port the proxy listens on.")
    base_url: str = setting("/", "URL prefix in front of everything (e.g. /jupyter/); "
                            "stored URL-encoded.")
    hub_ip: str = setting("127.0.0.1", "Address the hub itself listens on.")
    hub_port: int = setting(8081, "Port the hub itself listens on (0 picks a free port).")
    proxy_api_ip: str = setting("127.0.0.1", "Address of the proxy's REST API.")
    proxy_api_port: int = setting(8001, "Port of the proxy's REST API (0 picks a free port).")
    proxy_api_url: str = setting(
        "",
        "Attach to an already-running proxy (ours or configurable-http-proxy) at this API URL "
        "instead of starting one; its token comes from CONFIGPROXY_AUTH_TOKEN.",
    )
    proxy_check_interval: float = setting(30.0, "Seconds between proxy route checks.")
    data_dir: str = setting("./data", "Directory for the database, secrets and user dirs.")
    db_url: str = setting("", "SQLAlchemy database URL (default: SQLite in the data dir).")
    authenticator: str = setting(
        "native",
        "Authenticator: native, pam, dummy, oidc (OpenID Connect), ldap, or a dotted path to "
        "an Authenticator class.",
    )
    spawner: str = setting("local", "Spawner: local, slurm, or a dotted path to a Spawner "
                           "class.")
    log_level: str = setting("INFO", "Log level: DEBUG, INFO, WARNING, ERROR.")
    admin_users: list[str] = setting([], "Usernames made admins at start-up.", cli=False)
    admin_access: bool = setting(False, "Whether admins may open other users' servers.")
    cookie_max_age_days: float = setting(14.0, "Lifetime of the hub login session.")
    login_max_failures: int = setting(5, "Failed logins allowed per window before throttling.")
    login_throttle_window: float = setting(300.0, "Seconds of the failed-login window.")
    trusted_proxy_hops: int = setting(1, "X-Forwarded-For entries, counted from the end, "
                                      "that trusted proxies appended (ours appends one; add one "
                                      "per proxy in front of it; 0 ignores the header). Only a "
                                      "connection from loopback (the proxy) may set it.")
    spawn_start_timeout: float = setting(60.0, "Seconds a server has to start its process.")
    spawn_http_timeout: float = setting(60.0, "Seconds a started server has to answer HTTP.")
    concurrent_spawn_limit: int = setting(20, "Simultaneous pending spawns before 429.")
    server_poll_interval: float = setting(10.0, "Seconds between checks that servers live.")
    authenticate_prometheus: bool = setting(
        True, "/hub/metrics needs a token with read:metrics; turn off only for a Prometheus "
        "scraper on a private network.")
    cull_idle_timeout: float = setting(
        3600.0, "Stop servers idle this many seconds (no activity reported by the server nor "
        "seen by the proxy; 0: never).")
    cull_every: float = setting(0.0, "Seconds between idle checks (0: a tenth of "
                                "cull_idle_timeout, at most 300).")
    cull_max_age: float = setting(0.0, "Stop servers running longer than this many seconds, "
                                  "busy or not (0: no limit).")
    cull_users: bool = setting(False, "Also delete users (not admins) whose server was "
                               "culled and who have no other server running.")
    singleuser_cmd: list[str] = setting(["himalia-singleuser"],
                                        "Command that runs a user's server.", cli=False)
    singleuser_args: list[str] = setting([], "Extra arguments for the single-user command.",
                                         cli=False)
    default_url: str = setting("", "Landing URL of user servers (default: /lab).")
    root_dir: str = setting("", "Directory user servers show (default: each server's own "
                            "working directory under <data_dir>/users/).")
    accounts: str = setting(
        "auto",
        "Which Unix account runs each user's server: 'create' "
        "(account <account_prefix><name>, made on first spawn), 'existing' (the account of "
        "the same name, e.g. PAM or LDAP sites), 'hub' (the hub's own account for everyone), "
        "or 'auto': 'create' when the hub runs as root, else 'hub'.",
    )
    account_prefix: str = setting("jupyter-", "Prefix of the accounts made in 'create' mode.")
    account_home_root: str = setting("/home", "Where 'create' mode makes home directories.")
    account_shell: str = setting("/bin/bash", "Login shell of accounts made in 'create' mode.")
    mem_limit: str = setting("", "Memory limit of each server, e.g. 512M or 2G, enforced with "
                             "cgroups (empty: none). The hub refuses to start if it cannot "
                             "enforce it.")
    cpu_limit: float = setting(0.0, "CPUs each server may use, e.g. 1.5, enforced with cgroups "
                               "(0: no limit). The hub refuses to start if it cannot enforce it.")
    cgroup_root: str = setting("/sys/fs/cgroup", "Where the cgroup file system is mounted.")
    api_body_limit: int = setting(1024 * 1024, "Largest accepted API request body, in bytes.")
    token_max_age_days: float = setting(0.0, "Longest allowed API token lifetime (0: none).")
    create_first_admin: bool = setting(True, "On an empty database create 'admin' with a "
                                       "random password, printed once.")
    admin_password_file: bool = setting(
        True,
        "Also save the first admin's password in <data_dir>/admin-password (0600); the file "
        "is removed once the password changes.",
    )
    named_server_limit_per_user: int = setting(
        0,
        "Named servers a user may have (running or stopped; 0: no limit); creating one more "
        "answers 400.",
    )
    roles: list[dict[str, Any]] = setting(
        [],
        "Roles loaded at start-up: tables {name, description, scopes, users, groups, "
        "services}; a listed membership replaces the role's previous one.",
        cli=False,
    )
    groups: list[dict[str, Any]] = setting(
        [],
        "Groups created at start-up: tables {name, users, properties}; listed users and "
        "properties are added, nothing is removed.",
        cli=False,
    )
    services: list[dict[str, Any]] = setting(
        [],
        "Services: tables {name, url, api_token, admin, display, info, command, "
        "environment}; the token (8+ characters) authenticates as the service. With a "
        "command the hub runs the service, restarts it when it exits and stops it with "
        "itself (see Managed services).",
        cli=False,
    )
    # --- who may log in (every authenticator) -----------------------------------------------
    allowed_users: list[str] = setting(
        [], "If set (or allowed_groups is), only these users, members of allowed_groups and "
        "admins may log in.", cli=False)
    blocked_users: list[str] = setting([], "Users who may never log in.", cli=False)
    allowed_groups: list[str] = setting(
        [], "Groups (as the authenticator reports them) whose members may log in.", cli=False)
    admin_groups: list[str] = setting(
        [], "Members of these groups become admins when they log in (leaving a group does "
        "not take admin away).", cli=False)
    manage_groups: bool = setting(
        False, "Sync each user's hub groups with the groups the authenticator reports at login.")
    auth_state_key_file: str = setting(
        "", "File (mode 0600) holding the key(s) that encrypt auth_state, the tokens and claims "
        "a login returned; one Fernet key per line, the first encrypts. Without a key "
        "(this or auth_state_key) auth_state is off.")
    auth_state_key: str = setting(
        "", "The auth_state key(s) themselves (semicolon-separated), usually given as "
        "HIMALIA_AUTH_STATE_KEY.", cli=False)
    # --- OpenID Connect (authenticator = "oidc") --------------------------------------------
    oidc_issuer: str = setting("", "OpenID Provider's issuer URL (discovery at "
                               "<issuer>/.well-known/openid-configuration).")
    oidc_client_id: str = setting("", "Client id registered at the OpenID Provider.")
    oidc_client_secret: str = setting(
        "", "Client secret, usually given as HIMALIA_OIDC_CLIENT_SECRET.", cli=False)
    oidc_callback_url: str = setting(
        "", "Redirect URI registered at the provider (default: <public URL>hub/oauth_callback "
        "as the browser reached the hub).")
    oidc_scopes: list[str] = setting(["openid", "profile", "email"],
                                     "Scopes asked of the provider.", cli=False)
    oidc_username_claim: str = setting("preferred_username", "Claim that becomes the username.")
    oidc_username_normalize: str = setting(
        "lower", "How the username claim becomes a hub username: 'lower' (lower-cased), "
        "'local-part' (lower-cased, from the first '@' on dropped).")
    oidc_groups_claim: str = setting("groups", "Claim holding the user's groups (a list).")
    oidc_userinfo: bool = setting(False, "Also read claims from the userinfo endpoint.")
    oidc_login_service: str = setting("", "Name on the login button (default: the issuer's "
                                      "host).")
    oidc_end_session: bool = setting(
        True, "Logout also goes to the provider's end-session endpoint, when it has one.")
    # --- LDAP (authenticator = "ldap") ------------------------------------------------------
    ldap_url: str = setting("", "Directory server, ldaps://host:636 or ldap://host:389.")
    ldap_starttls: bool = setting(False, "Upgrade an ldap:// connection with StartTLS.")
    ldap_ca_file: str = setting("", "CA bundle that checks the directory's certificate "
                                "(default: the system's).")
    ldap_bind_dn_template: str = setting(
        "", "Bind directly as this DN, e.g. uid={username},ou=people,dc=example,dc=org "
        "(the name is DN-escaped); empty: search-then-bind with ldap_bind_dn.")
    ldap_bind_dn: str = setting("", "Service account that searches for users and groups.")
    ldap_bind_password: str = setting(
        "", "The service account's password, usually given as HIMALIA_LDAP_BIND_PASSWORD.",
        cli=False)
    ldap_search_base: str = setting("", "Where users are searched (search-then-bind).")
    ldap_search_filter: str = setting(
        "(uid={username})", "Filter that finds a user; {username} is filter-escaped.")
    ldap_group_attribute: str = setting(
        "memberOf", "User attribute listing the user's group DNs (empty: search groups).")
    ldap_group_search_base: str = setting(
        "", "Where groups are searched for (member=<user DN>) when ldap_group_attribute is "
        "empty.")
    ldap_timeout: float = setting(5.0, "Seconds allowed for connecting to and each operation "
                                  "on the directory.")

    profiles: list[dict[str, Any]] = setting(
        [],
        "Spawn profiles users pick from (any spawner): tables {name, display_name, description, "
        "groups, options (fixed), choices (user-choosable fields: partition, account, qos, "
        "reservation, walltime in minutes, cpus, memory, gpus; each a JSON Schema fragment "
        "with enum/minimum/maximum/default)}; see docs/slurm.md.",
        cli=False,
    )
    slurm_partition: str = setting("", "Slurm spawner: partition of the jobs (empty: Slurm's "
                                   "default).")
    slurm_account: str = setting("", "Slurm spawner: account charged (empty: the user's default).")
    slurm_qos: str = setting("", "Slurm spawner: quality of service (empty: the default).")
    slurm_walltime: str = setting("1:00:00", "Slurm spawner: walltime limit of each server's job "
                                  "([days-]hours:minutes:seconds).")
    slurm_cpus: int = setting(0, "Slurm spawner: CPUs per job (0: Slurm's default).")
    slurm_memory: str = setting("", "Slurm spawner: memory per job, e.g. 4G (empty: default).")
    slurm_gres: str = setting("", "Slurm spawner: generic resources, e.g. gpu:1 (empty: none).")
    slurm_reservation: str = setting("", "Slurm spawner: reservation to run in (empty: none).")
    slurm_directives: list[str] = setting(
        [], "Slurm spawner: extra #SBATCH lines, e.g. '--constraint=haswell'.", cli=False)
    slurm_prologue: str = setting("", "Slurm spawner: shell lines the job runs before the "
                                  "server, e.g. 'module load python'.", cli=False)
    slurm_template: str = setting("", "Slurm spawner: a Jinja2 batch-script template file "
                                  "replacing the shipped one (variables: see the README).")
    slurm_bind_ip: str = setting("0.0.0.0", "Slurm spawner: address servers bind on their "
                                 "compute node (the hub must reach it).")
    slurm_bin_dir: str = setting("", "Slurm spawner: folder of sbatch, squeue, scancel, sacct "
                                 "(empty: found on PATH).")
    slurm_queue_timeout: float = setting(
        86400.0, "Slurm spawner: seconds a job may wait in the queue and start (0: no limit); "
        "replaces spawn_start_timeout.")
    slurm_walltime_warning: float = setting(
        600.0, "Slurm spawner: seconds before the walltime runs out that its owner is warned "
        "(0: never).")

    def __post_init__(self) -> None:
        # A wrong type from code (``replace(port="80")``) fails here, not deep in a handler.
        for opt in OPTIONS:
            value = getattr(self, opt.name)
            if not opt.accepts(value):
                raise ConfigError(f"{opt.name} must be {opt.kind}, got {value!r}")

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed (names checked; values type-checked)."""
        for name in changes:
            if name not in OPTIONS_BY_NAME:
                raise ConfigError(f"unknown setting {name!r}")
        return dataclasses.replace(self, **changes)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_path / 'himalia.sqlite'}"


@dataclass(frozen=True)
class Option:
    """One setting, as seen by the CLI, the environment and the docs (from a Config field)."""

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

    @property
    def kind(self) -> str:
        """The type in words, for error messages."""
        if self.type is list:
            return "a list of tables" if self.items is dict else "a list of strings"
        return self.type.__name__

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this option's type (an int is a fine float; a bool no int)."""
        if self.type is list:
            return isinstance(value, list) and all(isinstance(x, self.items) for x in value)
        if isinstance(value, bool):
            return self.type is bool
        if self.type is float:
            return isinstance(value, int | float)
        return isinstance(value, self.type)


#: The annotations a setting may have, and the (type, items) each one means.
_KINDS: dict[Any, tuple[type, type]] = {
    str: (str, str), int: (int, str), float: (float, str), bool: (bool, str),
    list[str]: (list, str), list[dict[str, Any]]: (list, dict),
}


def _options(cls: type[Config] | None = None) -> tuple[Option, ...]:
    """One :class:`Option` per :class:`Config` field; a field that is not one fails here."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        kind = _KINDS.get(hints[f.name])
        if kind is None or "help" not in f.metadata:
            raise TypeError(f"Config.{f.name}: declare settings as `name: T = setting(...)` "
                            f"with T one of str, int, float, bool, list[str], "
                            f"list[dict[str, Any]]")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else (
            f.default)
        opt = Option(f.name, kind[0], default, f.metadata["help"], f.metadata["cli"], kind[1])
        if not opt.accepts(default):
            raise TypeError(f"Config.{f.name}: default {default!r} is not {opt.kind}")
        out.append(opt)
    return tuple(out)


OPTIONS: tuple[Option, ...] = _options()
OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


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
    values: dict[str, Any] = dataclasses.asdict(Config())  # fresh copies of list defaults
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
    return Config(**values)


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
        opt = OPTIONS_BY_NAME.get(key.replace("-", "_"))
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
