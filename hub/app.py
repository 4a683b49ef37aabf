"""Assemble the Tornado application from each module's route list.

Every module under :mod:`hub.api` and :mod:`hub.handlers` ends with a ``routes`` list of
``(pattern, handler)`` pairs, patterns relative to ``<base_url>hub/``. :func:`make_app` mounts
them, and refuses to start if a handler is neither a :class:`BaseHandler` (authenticated unless
``public``) nor one of the known static-file handlers.
"""

from __future__ import annotations

import logging
import re
import time
from types import ModuleType
from typing import Any

from tornado import web

from hub.api import authorizations as api_authorizations
from hub.api import groups as api_groups
from hub.api import metrics as api_metrics
from hub.api import oauth as api_oauth
from hub.api import proxy as api_proxy
from hub.api import root as api_root
from hub.api import servers as api_servers
from hub.api import services as api_services
from hub.api import shutdown as api_shutdown
from hub.api import spec as api_spec
from hub.api import tokens as api_tokens
from hub.api import users as api_users
from hub.config import Config
from hub.context import HubContext
from hub.handlers import login, oidc_login, pages
from hub.handlers.base import BaseHandler, scrub
from hub.paths import bootstrap_dir, static_dir

log = logging.getLogger(__name__)
access_log = logging.getLogger("hub.access")

ROUTE_MODULES: tuple[ModuleType, ...] = (
    api_root, api_users, api_servers, api_tokens, api_groups, api_services, api_proxy,
    api_shutdown, api_authorizations, api_oauth, api_spec, api_metrics, login, oidc_login,
    pages,
)
#: Paths that carry a secret (the legacy token lookup); the access log shows them redacted.
SECRET_PATH = re.compile(r"(/authorizations/token/)[^/?]+")


class StaticHandler(web.StaticFileHandler):
    """Public static files (our JS and Bootstrap) with the security headers."""

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "frame-ancestors 'none'")


def collect_routes(hub: HubContext) -> list[Any]:
    """All routes of the hub, with their dependencies, under the hub prefix."""
    return _routes(hub.config.base_url, {"hub": hub})


def route_table(config: Config) -> list[tuple[str, type[web.RequestHandler]]]:
    """Every route's pattern and handler, without dependencies (what route checks walk)."""
    return [(pattern, handler) for pattern, handler, _ in _routes(config.base_url, {})]


def _routes(base_url: str, deps: dict[str, Any]) -> list[Any]:
    prefix = re.escape(base_url + "hub/")
    out: list[Any] = []
    for module in ROUTE_MODULES:
        for pattern, handler in module.routes:
            if pattern.startswith("^"):  # absolute (relative to base_url), e.g. /user/...
                full = re.escape(base_url) + pattern[1:]
            else:
                full = prefix + pattern
            out.append((full, handler, deps))
    out += [
        (prefix + r"static/bootstrap/(.*)", StaticHandler, {"path": str(bootstrap_dir())}),
        (prefix + r"static/(.*)", StaticHandler, {"path": str(static_dir())}),
    ]
    check_routes(out)
    return out


def check_routes(routes: list[Any]) -> None:
    """Every handler is authenticated unless it says it is public."""
    for pattern, handler, _ in routes:
        if issubclass(handler, StaticHandler):
            continue
        if not issubclass(handler, BaseHandler):
            raise TypeError(f"{handler.__name__} at {pattern} is not a hub BaseHandler")


def log_request(handler: web.RequestHandler) -> None:
    """One access-log line per request, level by status; no query strings (tokens)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if status < 300 and handler.request.path.endswith(("/health", "/activity", "/metrics")):
        level = logging.DEBUG
    if not access_log.isEnabledFor(level):
        return  # e.g. health checks below INFO: skip the formatting too
    who = getattr(getattr(handler, "identity", None), "name", "-")
    ms = 1000.0 * handler.request.request_time()
    path = handler.request.path
    if "/authorizations/token/" in path:
        path = SECRET_PATH.sub(r"\1[secret]", path)
    access_log.log(level, "%d %s %s (%s) %.1fms", status, handler.request.method,
                   _log_safe(path, 300), _log_safe(who, 64), ms)


def _log_safe(text: str, limit: int) -> str:
    """:func:`scrub`, with a shortcut for the usual plain-ASCII text it would leave as is."""
    if len(text) <= limit and text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return scrub(text, limit)


def make_app(hub: HubContext) -> web.Application:
    """The hub's Tornado application."""
    settings: dict[str, Any] = {
        "cookie_secret": hub.cookie_secret,
        "xsrf_cookies": False,  # checked in BaseHandler.prepare, bound to the login session
        "xsrf_cookie_kwargs": {"path": hub.hub_prefix(), "samesite": "Strict"},
        "log_function": hub.metrics.request_logger(log_request),
        "default_handler_class": pages.NotFoundHandler,
        "default_handler_args": {"hub": hub},
        "compress_response": False,
        "start_time": time.time(),
    }
    return web.Application(collect_routes(hub), **settings)
