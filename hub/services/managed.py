"""Managed services: processes the hub starts, keeps running, and stops with itself.

A service in the ``services`` setting with a ``command`` is managed. The hub runs the command
as its own account, with the environment JupyterHub gives its services (so tools such as
``jupyterhub-idle-culler`` run unchanged): the allow-listed part of the hub's environment,
the service's ``environment`` table, and

``JUPYTERHUB_SERVICE_NAME``, ``JUPYTERHUB_API_TOKEN`` (also ``JPY_API_TOKEN``; one is made at
every hub start unless the service has an ``api_token``), ``JUPYTERHUB_API_URL``,
``JUPYTERHUB_BASE_URL``, ``JUPYTERHUB_SERVICE_PREFIX`` (``<base_url>services/<name>/``),
``JUPYTERHUB_SERVICE_URL`` (its ``url``, when it has one: the proxy routes the prefix there),
``JUPYTERHUB_CLIENT_ID`` (``service-<name>``), ``JUPYTERHUB_OAUTH_CALLBACK_URL`` and
``JUPYTERHUB_HOST``.

A service that exits is started again after a back-off (1 s, doubling up to a minute; back to
1 s once it has run a minute). Its output goes to ``<data_dir>/services/<name>.log`` (0600).
Unlike users' servers, managed services stop when the hub stops: they are the hub's helpers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from hub.config import Config
from hub.services import procinfo
from hub.services.rbac import Service
from hub.services.spawner import passthrough_env

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0
MAX_DELAY = 60.0
#: A run at least this long resets the back-off.
HEALTHY_RUN = 60.0


def service_env(service: Service, cfg: Config, hub_api_url: str,
                environ: Mapping[str, str]) -> dict[str, str]:
    """The complete environment of a managed service (see the module doc)."""
    prefix = f"{cfg.base_url}services/{service.name}/"
    env = passthrough_env(environ)
    env.update(service.environment)
    env.update({
        "JUPYTERHUB_SERVICE_NAME": service.name,
        "JUPYTERHUB_API_TOKEN": service.api_token,
        "JPY_API_TOKEN": service.api_token,
        "JUPYTERHUB_API_URL": hub_api_url,
        "JUPYTERHUB_BASE_URL": cfg.base_url,
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_CLIENT_ID": f"service-{service.name}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": prefix + "oauth_callback",
        "JUPYTERHUB_HOST": "",
    })
    if service.url:
        env["JUPYTERHUB_SERVICE_URL"] = service.url
    return env


class ManagedService:
    """Runs one service's command until cancelled, restarting it when it exits."""

    def __init__(self, service: Service, cfg: Config, hub_api_url: str) -> None:
        self.service = service
        self.cfg = cfg
        self.hub_api_url = hub_api_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.cfg.data_path / "services" / f"{self.service.name}.log"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(mode=0o700, exist_ok=True)
        out = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(
                list(self.service.command), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                env=service_env(self.service, self.cfg, self.hub_api_url, os.environ),
                cwd=self.log_path.parent)
        finally:
            os.close(out)

    async def run(self) -> None:
        """Start, wait, back off, start again — until cancelled (then the process stops)."""
        delay = FIRST_DELAY
        try:
            while True:
                began = time.monotonic()
                try:
                    self.proc = self._spawn()
                except OSError as e:
                    log.error("service %s: cannot run %s: %s", self.service.name,
                              self.service.command[0], e.strerror)
                else:
                    self.starts += 1
                    log.info("service %s started (pid %d)", self.service.name, self.proc.pid)
                    status = await self._wait(self.proc)
                    log.warning("service %s exited with status %s; restarting in %.0f s",
                                self.service.name, status, delay)
                if time.monotonic() - began >= HEALTHY_RUN:
                    delay = FIRST_DELAY
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
        finally:
            await self.stop()

    @staticmethod
    async def _wait(proc: subprocess.Popen[bytes]) -> int:
        while (status := proc.poll()) is None:
            await asyncio.sleep(0.2)
        return status

    async def stop(self) -> None:
        """Stop the process (SIGTERM to its group, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        started = procinfo.start_time(proc.pid)
        await procinfo.terminate(proc.pid, started, 5.0, reaper=procinfo.popen_reaper(proc))


def supervise(services: Mapping[str, Service], cfg: Config,
              hub_api_url: str) -> list[asyncio.Task[None]]:
    """One task per managed service; cancelling a task stops its service."""
    return [
        asyncio.create_task(ManagedService(s, cfg, hub_api_url).run(),
                            name=f"service-{s.name}")
        for s in services.values() if s.command
    ]
