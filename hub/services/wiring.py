"""Start-up of the hub's running services: proxy, server manager, OAuth, background loops.

:func:`build_hub` turns the :class:`~hub.context.Foundation` into a whole
:class:`~hub.context.HubContext` — called by :func:`hub.start.start` once the hub's port is
bound and before it serves a request — and :func:`start_loops` starts the background loops.
Kept apart from the handler-facing context so the order of steps reads in one place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from jsonschema.exceptions import SchemaError

from hub.config import Config
from hub.context import Foundation, HubContext
from hub.db.database import transaction
from hub.services import auth_state, managed, plugins, profiles, rbac
from hub.services import scopes as sc
from hub.services.culler import Culler
from hub.services.local_spawner import LocalProcessSpawner
from hub.services.metrics import HubMetrics, lag_loop
from hub.services.oauth import OAuthProvider
from hub.services.proxy_client import ProxyError, ProxyLauncher, Route
from hub.services.servers import ServerManager
from hub.services.slurm_spawner import SlurmSpawner
from hub.services.spawner import Spawner

log = logging.getLogger(__name__)

BUILTIN_SPAWNERS: dict[str, type[Spawner]] = {"local": LocalProcessSpawner,
                                               "slurm": SlurmSpawner}


class StartupFailure(RuntimeError):
    """A service could not start (message is for the operator)."""


def check_profiles(cfg: Config) -> None:
    """Refuse to start with a malformed ``profiles`` setting (not at the first spawn)."""
    try:
        profiles.parse(cfg.profiles)
    except (ValueError, SchemaError) as e:
        raise StartupFailure(f"invalid profiles setting: {e}") from None


def spawner_class(spec: str) -> type[Spawner]:
    """A spawner class from a built-in name or a ``module.Class`` path."""
    try:
        return plugins.load_class(spec, BUILTIN_SPAWNERS, Spawner, "spawner")
    except ValueError as e:
        raise StartupFailure(str(e)) from None


def load_rbac(base: Foundation) -> tuple[dict[str, rbac.Service], dict[str, list[str]]]:
    """Apply the ``groups``, ``roles`` and ``services`` settings to the database; returns the
    external services by name and the custom roles' scopes."""
    cfg = base.config
    try:
        with transaction(base.db) as session:
            services = rbac.load_config(session, cfg)
            roles = {**rbac.role_table(session), **sc.builtin_overrides(cfg.admin_access)}
    except rbac.RBACError as e:
        raise StartupFailure(f"invalid roles, groups or services setting: {e}") from None
    log.info("loaded %d roles, %d groups, %d services from the configuration",
             len(cfg.roles), len(cfg.groups), len(services))
    return services, roles


def service_routes(base_url: str, services: Mapping[str, rbac.Service]) -> dict[str, Route]:
    """``<base_url>services/<name>`` → the service's URL, for services that have one."""
    return {
        f"{base_url}services/{s.name}": Route(s.url, {"service": s.name, "jupyterhub": True})
        for s in services.values() if s.url
    }


async def build_hub(base: Foundation, hub_url: str) -> tuple[HubContext, str]:
    """Start or attach the proxy, make the server manager and let it resume every stored
    server, sync the proxy's routes; returns the whole context and the public URL."""
    cfg = base.config
    check_profiles(cfg)
    services, roles = load_rbac(base)
    launcher = ProxyLauncher(cfg, hub_url)
    try:
        proxy = await launcher.start()
    except ProxyError as e:
        raise StartupFailure(f"cannot start the proxy: {e}") from None
    servers = ServerManager(cfg, base.db, proxy, spawner_class(cfg.spawner), hub_url)
    metrics = servers.metrics = HubMetrics()
    metrics.watch(base.db, lambda: len(servers.wanted_routes()))
    proxy.observe, launcher.on_checked = metrics.proxy_request, metrics.routes_checked
    if base.authenticator.auth_state.enabled:
        servers.auth_state_source = functools.partial(auth_state.for_spawn, base.db,
                                                      base.authenticator)
    extra = service_routes(cfg.base_url, services)

    def wanted() -> dict[str, Route]:
        return {**extra, **servers.wanted_routes()}

    hub = HubContext(
        **{f.name: getattr(base, f.name) for f in dataclasses.fields(Foundation)},
        servers=servers, proxy=proxy, proxy_launcher=launcher,
        oauth=OAuthProvider(base.db, cfg), wanted_routes=wanted,
        custom_roles=roles, external_services=services, metrics=metrics,
    )
    began = time.monotonic()
    await servers.reattach()
    metrics.init_spawners.observe(time.monotonic() - began)
    try:
        await launcher.check_routes(wanted())
    except ProxyError as e:
        log.error("initial route check failed: %s", e)
    return hub, launcher.public_url or f"http://{cfg.ip}:{cfg.port}"


def start_loops(hub: HubContext) -> list[asyncio.Task[Any]]:
    """The background loops: server polling, the proxy's route check, event-loop lag, the
    idle culler."""
    culler = Culler(hub.config, hub.db, hub.servers, hub.proxy)
    return [
        asyncio.create_task(culler.cull_loop(), name="culler"),
        asyncio.create_task(lag_loop(hub.metrics), name="loop-lag"),
        asyncio.create_task(hub.servers.poll_loop(), name="server-poll"),
        asyncio.create_task(hub.proxy_launcher.check_loop(hub.wanted_routes), name="proxy-check"),
        *managed.supervise(hub.external_services, hub.config, hub.servers.hub_api_url),
    ]
