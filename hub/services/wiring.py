"""Start-up of the hub's running services: proxy, server manager, OAuth, background loops.

Called by :func:`hub.start.start` once the hub listens. Kept apart from the handler-facing
context so the order of steps reads in one place.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hub.context import HubContext
from hub.db.database import transaction
from hub.services import plugins, rbac
from hub.services.local_spawner import LocalProcessSpawner
from hub.services.oauth import OAuthProvider
from hub.services.proxy_client import ProxyError, ProxyLauncher, Route
from hub.services.servers import ServerManager
from hub.services.spawner import Spawner

log = logging.getLogger(__name__)

BUILTIN_SPAWNERS: dict[str, type[Spawner]] = {"local": LocalProcessSpawner}


class StartupFailure(RuntimeError):
    """A service could not start (message is for the operator)."""


def spawner_class(spec: str) -> type[Spawner]:
    """A spawner class from a built-in name or a ``module.Class`` path."""
    try:
        return plugins.load_class(spec, BUILTIN_SPAWNERS, Spawner, "spawner")
    except ValueError as e:
        raise StartupFailure(str(e)) from None


def load_rbac(hub: HubContext) -> None:
    """Apply the ``groups``, ``roles`` and ``services`` settings to the database.

    Synchronous on purpose: it runs before the first ``await`` of start-up, so no request is
    served before the configured roles are in place.
    """
    try:
        with transaction(hub.db) as session:
            hub.external_services = rbac.load_config(session, hub.config)
            hub.custom_roles = rbac.role_table(session)
    except rbac.RBACError as e:
        raise StartupFailure(f"invalid roles, groups or services setting: {e}") from None
    log.info("loaded %d roles, %d groups, %d services from the configuration",
             len(hub.config.roles), len(hub.config.groups), len(hub.external_services))


def service_routes(hub: HubContext) -> dict[str, Route]:
    """``<base_url>services/<name>`` → the service's URL, for services that have one."""
    return {
        f"{hub.config.base_url}services/{s.name}": Route(s.url, {"service": s.name,
                                                                  "jupyterhub": True})
        for s in hub.external_services.values() if s.url
    }


async def start_services(hub: HubContext, hub_url: str) -> tuple[str, list[asyncio.Task[Any]]]:
    """Start or attach the proxy, re-attach servers, start loops; returns the public URL."""
    cfg = hub.config
    load_rbac(hub)
    launcher = ProxyLauncher(cfg, hub_url)
    try:
        proxy = await launcher.start()
    except ProxyError as e:
        raise StartupFailure(f"cannot start the proxy: {e}") from None
    hub.proxy = proxy
    hub.oauth = OAuthProvider(hub.db, cfg)
    servers = ServerManager(cfg, hub.db, proxy, spawner_class(cfg.spawner), hub_url)
    hub.servers = servers
    hub.proxy_launcher = launcher

    def wanted() -> dict[str, Route]:
        return {**service_routes(hub), **servers.wanted_routes()}

    hub.wanted_routes = wanted
    await servers.reattach()
    try:
        await launcher.check_routes(wanted())
    except ProxyError as e:
        log.error("initial route check failed: %s", e)
    tasks = [
        asyncio.create_task(servers.poll_loop(), name="server-poll"),
        asyncio.create_task(launcher.check_loop(wanted), name="proxy-check"),
    ]
    return launcher.public_url or f"http://{cfg.ip}:{cfg.port}", tasks
