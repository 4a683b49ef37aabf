"""Start-up of the hub's running services: proxy, server manager, OAuth, background loops.

Called by :func:`hub.start.start` once the hub listens. Kept apart from the handler-facing
context so the order of steps reads in one place.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

from hub.context import HubContext
from hub.services.local_spawner import LocalProcessSpawner
from hub.services.oauth import OAuthProvider
from hub.services.proxy_client import ProxyError, ProxyLauncher
from hub.services.servers import ServerManager
from hub.services.spawner import Spawner

log = logging.getLogger(__name__)

BUILTIN_SPAWNERS: dict[str, type[Spawner]] = {"local": LocalProcessSpawner}


class StartupFailure(RuntimeError):
    """A service could not start (message is for the operator)."""


def spawner_class(spec: str) -> type[Spawner]:
    """A spawner class from a built-in name or a ``module.Class`` path."""
    if spec in BUILTIN_SPAWNERS:
        return BUILTIN_SPAWNERS[spec]
    module, _, attr = spec.replace(":", ".").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise StartupFailure(f"cannot load spawner {spec!r}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Spawner)):
        raise StartupFailure(f"{spec!r} is not a Spawner")
    return cls


async def start_services(hub: HubContext, hub_url: str) -> tuple[str, list[asyncio.Task[Any]]]:
    """Start or attach the proxy, re-attach servers, start loops; returns the public URL."""
    cfg = hub.config
    launcher = ProxyLauncher(cfg, hub_url)
    try:
        proxy = await launcher.start()
    except ProxyError as e:
        raise StartupFailure(f"cannot start the proxy: {e}") from None
    hub.proxy = proxy
    hub.oauth = OAuthProvider(hub.db, cfg)
    servers = ServerManager(cfg, hub.db, proxy, spawner_class(cfg.spawner), hub_url)
    hub.servers = servers
    await servers.reattach()
    try:
        await launcher.check_routes(servers.wanted_routes())
    except ProxyError as e:
        log.error("initial route check failed: %s", e)
    tasks = [
        asyncio.create_task(servers.poll_loop(), name="server-poll"),
        asyncio.create_task(launcher.check_loop(servers.wanted_routes), name="proxy-check"),
    ]
    return launcher.public_url or f"http://{cfg.ip}:{cfg.port}", tasks
