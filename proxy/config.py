"""Proxy configuration: one registry of options, filled from CLI flags and the environment.

:class:`ProxyConfig` holds every setting with its default; :data:`OPTIONS` maps each CLI flag
to a field with its help text (a test checks that every field but the token has a flag and
that every flag is documented). Flag names and units follow configurable-http-proxy, so a
script written for it can start this proxy: ``--keep-alive-timeout`` and ``--timeout`` are in
milliseconds. The API token comes only from ``CONFIGPROXY_AUTH_TOKEN``: never from argv,
where other local users could read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata

from .routes import parse_target

__all__ = ["OPTIONS", "ConfigError", "Option", "ProxyConfig", "build_parser", "from_args"]

TOKEN_ENV = "CONFIGPROXY_AUTH_TOKEN"
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class ConfigError(ValueError):
    """A configuration the proxy refuses to start with; the message is for the operator."""


@dataclass(frozen=True)
class ProxyConfig:
    """Every proxy setting; see :data:`OPTIONS` for their meaning."""

    ip: str = ""
    port: int = 8000
    api_ip: str = "127.0.0.1"
    api_port: int | None = None
    default_target: str | None = None
    error_target: str | None = None
    ssl_key: str | None = None
    ssl_cert: str | None = None
    routes_file: str | None = None
    host_routing: bool = False
    no_auth: bool = False
    keep_alive_timeout: int = 30_000
    timeout: int = 10_000
    log_level: str = "info"
    no_metrics: bool = False
    metrics_no_auth: bool = False
    auth_token: str | None = field(default=None, repr=False)

    @property
    def effective_api_port(self) -> int:
        """``--api-port``, else ``--port`` + 1 (8001 by default; 0 stays 0)."""
        if self.api_port is not None:
            return self.api_port
        return self.port + 1 if self.port else 0


@dataclass(frozen=True)
class Option:
    """One CLI flag: the :class:`ProxyConfig` field it sets, its help and value type."""

    flag: str
    field: str
    help: str
    kind: type = str  # str, int or bool (a switch)
    metavar: str | None = None


OPTIONS: tuple[Option, ...] = (
    Option("--ip", "ip", "public-facing IP address ('' = all interfaces)", metavar="IP"),
    Option("--port", "port", "public-facing port (0 = pick a free one)", int, "N"),
    Option("--api-ip", "api_ip", "IP address of the REST API", metavar="IP"),
    Option("--api-port", "api_port", "port of the REST API (default: --port + 1)", int, "N"),
    Option("--default-target", "default_target", "target of the / route", metavar="URL"),
    Option(
        "--error-target",
        "error_target",
        "server for error pages: gets GET <URL>/<status>?url=<request>",
        metavar="URL",
    ),
    Option("--ssl-key", "ssl_key", "TLS private key for the public port", metavar="FILE"),
    Option("--ssl-cert", "ssl_cert", "TLS certificate chain for the public port", metavar="FILE"),
    Option(
        "--routes-file",
        "routes_file",
        "journal the routing table to FILE and reload it at start",
        metavar="FILE",
    ),
    Option("--host-routing", "host_routing", "route on /<host>/<path> keys", bool),
    Option(
        "--no-auth",
        "no_auth",
        f"allow starting without {TOKEN_ENV} (only with a loopback --api-ip)",
        bool,
    ),
    Option(
        "--keep-alive-timeout",
        "keep_alive_timeout",
        "close idle client connections after N ms",
        int,
        "MS",
    ),
    Option("--timeout", "timeout", "give up connecting to a target after N ms (503)", int, "MS"),
    Option("--log-level", "log_level", "debug, info, warn or error", metavar="LEVEL"),
    Option("--no-metrics", "no_metrics", "count nothing and serve no GET /metrics", bool),
    Option(
        "--metrics-no-auth",
        "metrics_no_auth",
        "serve GET /metrics on the API port without the token (for a private scraper)",
        bool,
    ),
)


def _version() -> str:
    try:
        return metadata.version("himalia")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The CLI, generated from :data:`OPTIONS` (defaults shown in ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="himalia-proxy",
        description="Himalia's reverse proxy, with configurable-http-proxy's REST API. "
        f"The API token is read from ${TOKEN_ENV}.",
    )
    defaults = ProxyConfig()
    for option in OPTIONS:
        default = getattr(defaults, option.field)
        if option.kind is bool:
            parser.add_argument(option.flag, dest=option.field, action="store_true",
                                help=option.help)
        else:
            shown = "" if default is None else f" [default: {default!r}]"
            parser.add_argument(option.flag, dest=option.field, type=option.kind,
                                metavar=option.metavar, default=default,
                                help=option.help + shown)
    parser.add_argument("--version", action="version", version=_version())
    return parser


def from_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> ProxyConfig:
    """Parse ``argv`` and the token from ``environ``; raise :class:`ConfigError` if invalid."""
    namespace = build_parser().parse_args(argv)
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(ProxyConfig)
              if hasattr(namespace, f.name)}
    config = ProxyConfig(**values, auth_token=environ.get(TOKEN_ENV) or None)
    validate(config)
    return config


def _is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def validate(config: ProxyConfig) -> None:
    """Raise :class:`ConfigError` for a configuration the proxy must not start with."""
    if not config.auth_token:
        if not config.no_auth:
            raise ConfigError(
                f"{TOKEN_ENV} is not set: refusing to start with an unauthenticated API "
                "(pass --no-auth to allow that on a loopback --api-ip)"
            )
        if not _is_loopback(config.api_ip):
            raise ConfigError("--no-auth is only allowed with a loopback --api-ip")
    if bool(config.ssl_key) != bool(config.ssl_cert):
        raise ConfigError("--ssl-key and --ssl-cert go together")
    for name in ("default_target", "error_target"):
        value = getattr(config, name)
        if value is not None:
            try:
                parse_target(value)
            except ValueError as exc:
                raise ConfigError(f"--{name.replace('_', '-')}: {exc}") from None
    for port in (config.port, config.effective_api_port):
        if not 0 <= port <= 65535:
            raise ConfigError(f"port {port} is out of range")
    if config.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"unknown --log-level {config.log_level!r}")
    if config.keep_alive_timeout <= 0 or config.timeout <= 0:
        raise ConfigError("timeouts must be positive")
