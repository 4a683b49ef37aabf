"""The hub's shared services, built once at start-up and handed to every handler.

Handlers receive this object through ``initialize(hub=...)`` (see :mod:`hub.app`) and reach
their dependencies as typed attributes; there are no module globals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jinja2
from sqlalchemy.orm import Session, sessionmaker

from hub.config import Config
from hub.services.auth import Authenticator
from hub.services.identity import IdentityCache
from hub.services.throttle import LoginThrottle

if TYPE_CHECKING:
    from hub.services.accounts import AccountPolicy
    from hub.services.metrics import HubMetrics
    from hub.services.oauth import OAuthProvider
    from hub.services.proxy_client import ProxyClient, ProxyLauncher, Route
    from hub.services.rbac import Service
    from hub.services.servers import ServerManager


@dataclass
class Foundation:
    """What start-up builds before it talks to the proxy: config, database, authentication."""

    config: Config
    db: sessionmaker[Session]
    authenticator: Authenticator
    templates: jinja2.Environment
    cookie_secret: bytes
    throttle: LoginThrottle
    #: Resolved identities and token lookups, kept in step with the database by ``db``'s events.
    identities: IdentityCache
    #: Which Unix account runs each user's server; also vets names at user creation.
    accounts: AccountPolicy

    def hub_prefix(self) -> str:
        """``<base_url>hub/`` — where every hub page and API lives."""
        return self.config.base_url + "hub/"


@dataclass
class HubContext(Foundation):
    """Everything a request handler may need, built whole before the hub answers a request
    (:func:`hub.services.wiring.build_hub`): nothing in it is ever missing."""

    servers: ServerManager
    #: The proxy's client; :attr:`proxy_launcher` is its supervisor (``/hub/api/proxy``).
    proxy: ProxyClient
    proxy_launcher: ProxyLauncher
    oauth: OAuthProvider
    #: Every route the proxy should hold besides the hub's (servers and services).
    wanted_routes: Callable[[], Mapping[str, Route]]
    #: The hub's Prometheus metrics (``/hub/metrics``), on a registry of its own.
    metrics: HubMetrics
    #: Role name → scopes of the roles defined in the database (read-only at run time).
    custom_roles: dict[str, list[str]] = field(default_factory=dict)
    #: External services from the ``services`` setting, by name (read-only at run time).
    external_services: dict[str, Service] = field(default_factory=dict)
    start_time: float = field(default_factory=time.time)
