"""Parse and validate the ``JUPYTERHUB_*`` environment into a typed :class:`HubEnv`.

The hub hands a spawned server its configuration through environment variables
(``../shared/CONTRACTS.md`` §2). :func:`from_environ` reads them once, checks every one and
reports *all* problems together in one :class:`EnvError`, so a misconfigured spawner shows a
single clear message instead of a traceback from deep inside Jupyter Server.

URL paths (``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_BASE_URL``) are normalized to their
percent-encoded form: a base URL may contain a space or ``@``, and request paths, cookie paths
and route patterns all use the encoded form. Characters that are already escaped stay as they
are, so the hub may pass either form.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

__all__ = ["VARIABLES", "EnvError", "EnvVar", "HubEnv", "from_environ", "quote_path"]

DEFAULT_ACTIVITY_INTERVAL = 300.0
DEFAULT_URL = "/lab"

# Characters left alone when quoting a URL path: RFC 3986 pchar sub-delims plus "/" and "%"
# (so an already-encoded path is unchanged).
_PATH_SAFE = "/%@!$&'()*+,;=:~"


@dataclass(frozen=True)
class EnvVar:
    """One environment variable the server reads: its name, whether it is required, and help."""

    name: str
    required: bool
    help: str


#: Every variable :func:`from_environ` reads — the documented interface of ``himalia-singleuser``.
VARIABLES: tuple[EnvVar, ...] = (
    EnvVar("JUPYTERHUB_API_TOKEN", True,
           "the server's own hub API token, also its OAuth client secret (legacy: JPY_API_TOKEN)"),
    EnvVar("JUPYTERHUB_API_URL", True,
           "hub API as reachable from the server, e.g. http://127.0.0.1:8081/hub/api"),
    EnvVar("JUPYTERHUB_CLIENT_ID", True, "OAuth client id, e.g. jupyterhub-user-alice"),
    EnvVar("JUPYTERHUB_USER", True, "name of the user owning this server"),
    EnvVar("JUPYTERHUB_SERVICE_URL", True,
           "where to bind, http://ip:port/user/<name>/ (the path is the prefix)"),
    EnvVar("JUPYTERHUB_SERVICE_PREFIX", False,
           "URL prefix the server is served under; default: the path of JUPYTERHUB_SERVICE_URL"),
    EnvVar("JUPYTERHUB_SERVER_NAME", False, "name of this server, '' for the default server"),
    EnvVar("JUPYTERHUB_BASE_URL", False, "public base URL of the whole hub, default '/'"),
    EnvVar("JUPYTERHUB_HOST", False,
           "public hub host (scheme://host[:port]) when user servers live on subdomains"),
    EnvVar("JUPYTERHUB_OAUTH_CALLBACK_URL", False,
           "OAuth redirect_uri registered with the hub; default <prefix>oauth_callback"),
    EnvVar("JUPYTERHUB_OAUTH_ACCESS_SCOPES", False,
           "JSON list of scopes granting access to this server (legacy: JUPYTERHUB_OAUTH_SCOPES)"),
    EnvVar("JUPYTERHUB_ACTIVITY_URL", False,
           "where to POST activity reports; unset disables activity reporting"),
    EnvVar("JUPYTERHUB_ACTIVITY_INTERVAL", False,
           f"seconds between activity reports, default {DEFAULT_ACTIVITY_INTERVAL:g}"),
    EnvVar("JUPYTERHUB_ROOT_DIR", False, "notebook directory, default the working directory"),
    EnvVar("JUPYTERHUB_DEFAULT_URL", False,
           f"landing page under the prefix, default {DEFAULT_URL}"),
)


class EnvError(ValueError):
    """The environment is missing or has invalid variables; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid JUPYTERHUB_* environment:\n{lines}")


@dataclass(frozen=True)
class HubEnv:
    """The validated configuration of one single-user server.

    URL paths are percent-encoded, start with ``/`` and (prefixes) end with ``/``;
    ``api_url`` has no trailing slash. ``api_token`` is kept out of ``repr``.
    """

    api_token: str = field(repr=False)
    api_url: str
    client_id: str
    user: str
    server_name: str
    bind_ip: str
    bind_port: int
    service_prefix: str
    base_url: str
    hub_host: str
    oauth_callback_url: str
    oauth_callback_path: str
    access_scopes: tuple[str, ...]
    activity_url: str | None
    activity_interval: float
    root_dir: str | None
    default_url: str

    @property
    def hub_prefix(self) -> str:
        """Public path of the hub's pages, ``<base_url>hub/``."""
        return self.base_url + "hub/"

    @property
    def authorize_url(self) -> str:
        """The hub's public OAuth authorize URL (relative unless ``JUPYTERHUB_HOST`` is set)."""
        return self.hub_host + self.hub_prefix + "api/oauth2/authorize"

    @property
    def token_url(self) -> str:
        """Where the server exchanges an OAuth code for an access token (hub-internal URL)."""
        return self.api_url + "/oauth2/token"

    @property
    def user_url(self) -> str:
        """The hub's whoami endpoint (hub-internal URL)."""
        return self.api_url + "/user"


def quote_path(path: str) -> str:
    """Percent-encode the characters of ``path`` that may not appear raw in a URL path.

    Already-escaped sequences, ``/``, ``@`` and the other RFC 3986 sub-delimiters are kept, so
    ``quote_path(quote_path(p)) == quote_path(p)``.
    """
    return quote(path, safe=_PATH_SAFE)


def default_access_scopes(user: str, server_name: str) -> tuple[str, ...]:
    """The scopes that grant access to ``user``'s server ``server_name`` (CONTRACTS §3.4)."""
    return (f"access:servers!server={user}/{server_name}", f"access:servers!user={user}")


class _Reader:
    """Collects values and problems while reading one environment mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []
        self._help = {v.name: v.help for v in VARIABLES}

    def get(self, name: str, *fallbacks: str, required: bool = False) -> str:
        """The stripped value of ``name`` (or of a legacy fallback); ``""`` if unset."""
        for key in (name, *fallbacks):
            value = self.environ.get(key, "").strip()
            if value:
                return value
        if required:
            self.problems.append(f"{name} is not set ({self._help[name]})")
        return ""

    def problem(self, name: str, message: str) -> None:
        """Record that ``name`` is invalid."""
        self.problems.append(f"{name}: {message}")


def _http_url(r: _Reader, name: str, value: str) -> bool:
    """Check that ``value`` is an absolute http(s) URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        r.problem(name, f"must be an absolute http(s) URL, got {value!r}")
        return False
    return True


def _prefix_path(r: _Reader, name: str, value: str) -> str:
    """Normalize a URL path that must start with ``/``; adds the trailing ``/``."""
    if not value.startswith("/") or value.startswith("//"):
        r.problem(name, f"must be a URL path starting with a single '/', got {value!r}")
        return "/"
    if any(ord(c) < 0x20 or c in "?#\\" for c in value):
        r.problem(name, f"must not contain control characters, '?', '#' or '\\', got {value!r}")
        return "/"
    return quote_path(value.rstrip("/") + "/")


def _bind(r: _Reader, service_url: str) -> tuple[str, int, str]:
    """Bind address and path from ``JUPYTERHUB_SERVICE_URL``."""
    name = "JUPYTERHUB_SERVICE_URL"
    if not service_url:
        return "", 0, ""
    parts = urlsplit(service_url)
    if parts.scheme != "http" or not parts.hostname:
        r.problem(name, f"must be http://ip:port/prefix/, got {service_url!r}")
        return "", 0, ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if not port:
        r.problem(name, f"must include a valid port, got {service_url!r}")
        return parts.hostname, 0, ""
    path = parts.path if parts.path not in ("", "/") else ""
    return parts.hostname, port, path


def _scopes(r: _Reader, user: str, server_name: str) -> tuple[str, ...]:
    """Access scopes from JSON, or the defaults for ``user``/``server_name``."""
    raw = r.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES", "JUPYTERHUB_OAUTH_SCOPES")
    if not raw:
        return default_access_scopes(user, server_name)
    try:
        scopes = json.loads(raw)
    except ValueError:
        scopes = None
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
        r.problem("JUPYTERHUB_OAUTH_ACCESS_SCOPES", f"must be a JSON list of strings, got {raw!r}")
        return ()
    return tuple(scopes)


def _interval(r: _Reader) -> float:
    """Activity interval in seconds, > 0."""
    raw = r.get("JUPYTERHUB_ACTIVITY_INTERVAL")
    if not raw:
        return DEFAULT_ACTIVITY_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        r.problem("JUPYTERHUB_ACTIVITY_INTERVAL", f"must be a positive number, got {raw!r}")
        return DEFAULT_ACTIVITY_INTERVAL
    return value


def _hub_host(r: _Reader) -> str:
    """``JUPYTERHUB_HOST`` as ``scheme://host[:port]`` without a trailing slash, or ``""``."""
    host = r.get("JUPYTERHUB_HOST").rstrip("/")
    if not host or not _http_url(r, "JUPYTERHUB_HOST", host):
        return ""
    parts = urlsplit(host)
    if parts.path or parts.query or parts.fragment or parts.username:
        r.problem("JUPYTERHUB_HOST", f"must be scheme://host[:port] without a path, got {host!r}")
        return ""
    return host


def _callback(r: _Reader, prefix: str) -> tuple[str, str]:
    """The registered redirect_uri (verbatim) and the normalized path it arrives on."""
    url = r.get("JUPYTERHUB_OAUTH_CALLBACK_URL") or prefix + "oauth_callback"
    path = quote_path(urlsplit(url).path)
    if not path.startswith(prefix) or path == prefix:
        r.problem(
            "JUPYTERHUB_OAUTH_CALLBACK_URL",
            f"must be a path under the service prefix {prefix!r}, got {url!r}",
        )
    return url, path


def _default_url(r: _Reader) -> str:
    """The landing page under the prefix: a local path like ``/lab``."""
    value = r.get("JUPYTERHUB_DEFAULT_URL") or DEFAULT_URL
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        r.problem("JUPYTERHUB_DEFAULT_URL", f"must be a local path like /lab, got {value!r}")
        return DEFAULT_URL
    return value


def from_environ(environ: Mapping[str, str] | None = None) -> HubEnv:
    """Read and validate the server's configuration from ``environ`` (default ``os.environ``).

    Raises :class:`EnvError` listing every missing or invalid variable.
    """
    r = _Reader(os.environ if environ is None else environ)
    api_token = r.get("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", required=True)
    api_url = r.get("JUPYTERHUB_API_URL", required=True).rstrip("/")
    if api_url:
        _http_url(r, "JUPYTERHUB_API_URL", api_url)
    client_id = r.get("JUPYTERHUB_CLIENT_ID", required=True)
    if any(ord(c) < 0x21 for c in client_id):
        r.problem("JUPYTERHUB_CLIENT_ID", "must not contain spaces or control characters")
    user = r.get("JUPYTERHUB_USER", required=True)
    server_name = r.get("JUPYTERHUB_SERVER_NAME")
    bind_ip, bind_port, url_path = _bind(r, r.get("JUPYTERHUB_SERVICE_URL", required=True))

    raw_prefix = r.get("JUPYTERHUB_SERVICE_PREFIX") or url_path
    prefix = "/"
    if not raw_prefix:
        if bind_port:
            r.problem("JUPYTERHUB_SERVICE_PREFIX",
                      "not set, and JUPYTERHUB_SERVICE_URL has no path")
    else:
        prefix = _prefix_path(r, "JUPYTERHUB_SERVICE_PREFIX", raw_prefix)
        if url_path and quote_path(url_path.rstrip("/") + "/") != prefix:
            r.problem(
                "JUPYTERHUB_SERVICE_PREFIX",
                f"{raw_prefix!r} differs from the path of JUPYTERHUB_SERVICE_URL {url_path!r}",
            )
    base_url = _prefix_path(r, "JUPYTERHUB_BASE_URL", r.get("JUPYTERHUB_BASE_URL") or "/")
    hub_host = _hub_host(r)
    callback_url, callback_path = _callback(r, prefix)
    scopes = _scopes(r, user, server_name)

    activity_url = r.get("JUPYTERHUB_ACTIVITY_URL") or None
    if activity_url:
        _http_url(r, "JUPYTERHUB_ACTIVITY_URL", activity_url)
    interval = _interval(r)
    root_dir = r.get("JUPYTERHUB_ROOT_DIR") or None
    if root_dir and not os.path.isdir(os.path.expanduser(root_dir)):
        r.problem("JUPYTERHUB_ROOT_DIR", f"{root_dir!r} is not a directory")
    default_url = _default_url(r)

    if r.problems:
        raise EnvError(r.problems)
    return HubEnv(
        api_token=api_token,
        api_url=api_url,
        client_id=client_id,
        user=user,
        server_name=server_name,
        bind_ip=bind_ip,
        bind_port=bind_port,
        service_prefix=prefix,
        base_url=base_url,
        hub_host=hub_host,
        oauth_callback_url=callback_url,
        oauth_callback_path=callback_path,
        access_scopes=scopes,
        activity_url=activity_url,
        activity_interval=interval,
        root_dir=os.path.expanduser(root_dir) if root_dir else None,
        default_url=default_url,
    )
