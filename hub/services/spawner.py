"""The :class:`Spawner` contract.

A spawner starts, watches and stops one user server. The hub's :class:`~hub.services.servers.
ServerManager` owns the orchestration (tokens, OAuth client, readiness, routes); a spawner only
deals with the process (or container, or batch job) itself. Subclasses must define
:meth:`Spawner.start`, :meth:`Spawner.poll` and :meth:`Spawner.stop` — a class that forgets one
fails when it is *defined*, not when a user first presses Start. Intermediate base classes opt out
with ``class Base(Spawner, abstract=True)``.

Names and URLs derived from a (user, server) pair live in :mod:`hub.services.server_names`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from hub.config import Config
from hub.services.server_names import (
    access_scopes,
    activity_path,
    client_id,
    oauth_callback_url,
    server_prefix,
    url_base,
)

#: One progress event: ``{"progress": 0-100, "message": str}`` (plus ``ready``/``failed``/``url``).
ProgressEvent = dict[str, Any]

#: The parts of the hub's own environment a user server may see (CONTRACTS §2).
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "PYTHONPATH", "LD_LIBRARY_PATH")
ENV_ALLOW_PREFIXES = ("CONDA_",)


def passthrough_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of the hub's environment (never secrets: those are not listed)."""
    return {
        k: v for k, v in environ.items()
        if k in ENV_ALLOW or k.startswith(ENV_ALLOW_PREFIXES)
    }


async def http_status(url: str, timeout: float) -> int | None:
    """Status code of ``GET url`` (plain http), or None if there is no complete answer in time.

    A raw request rather than a pooled HTTP client: readiness probes of many starting servers
    must not queue behind one that accepts connections but never answers.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode("latin-1"))
            await writer.drain()
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    fields = line.split()
    if len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1].isdigit():
        return int(fields[1])
    return None


class SpawnerError(RuntimeError):
    """A start failed for a reason that is safe to show the user (the message says which)."""


class Spawner:
    """Start, poll and stop one user server. State round-trips through the database.

    Contract (all coroutines run on the hub's event loop; none may block it):

    - :meth:`start` launches the server so that it binds where the environment from
      :meth:`contract_env` says, and returns the URL the proxy should forward to
      (``http://ip:port``). It need not wait for HTTP readiness: the manager does. It raises on
      failure (:class:`SpawnerError` for a message the user may read). Everything needed to find
      the server again must be in :meth:`get_state` as soon as the process exists.
    - :meth:`poll` returns None while the server runs, else an exit status (an int; 0 when
      there is nothing to poll). It must never report a different process as the server.
    - :meth:`stop` ends the server (gracefully, then forcibly) and returns when it is gone;
      stopping a stopped server is a no-op.
    - :meth:`progress` may yield events while :meth:`start` runs (optional).
    - :meth:`exit_reason` — after :meth:`poll` reported that the server ended, a user-safe
      explanation of why (optional; e.g. "the server ran out of memory (limit 512 MiB)").
    - :meth:`notices` — while the server runs, user-safe things its owner should know (e.g. a
      kernel killed for going over the memory limit); shown on the home page (optional).
    - :meth:`get_state` / :meth:`load_state` / :meth:`clear_state` — a JSON-able dict that lets a
      restarted hub re-attach to a running server. The manager stores it with one key of its
      own added, ``"target"`` (what :meth:`start` returned); :meth:`load_state` gets it back and
      may ignore it.

    The manager sets :attr:`api_token` before calling :meth:`start`, and :attr:`on_state` to a
    callable that stores :meth:`get_state` at once (for a spawner whose ``start`` runs long, e.g.
    a batch job waiting in a queue: it calls it as soon as there is something to find again).
    :attr:`start_timeout` replaces ``spawn_start_timeout`` when set. :attr:`can_resume_start`
    says a restarted hub may call :meth:`start` again on a start it interrupted (after
    :meth:`load_state`), to wait for the same server instead of giving up on it.

    **auth_state hook.** Before :meth:`start` the manager also sets :attr:`auth_state`: what the
    user's identity provider returned at their last login (for ``oidc``: ``access_token``,
    ``refresh_token``, ``id_token``, ``expires_at``, ``scope`` and ``claims``), renewed first if
    it had expired — or None when auth_state is off (no key) or there is none. A site puts
    parts of it into the server's environment by overriding :meth:`auth_state_env` in a
    Spawner subclass (``spawner = "mysite.spawners:MySpawner"``); :meth:`contract_env` adds what
    it returns. The default adds nothing: tokens reach a server only when the site says so.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("start", "poll", "stop")

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        missing = [m for m in cls.REQUIRED if getattr(cls, m) is getattr(Spawner, m)]
        if missing:
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)} (Spawner contract)")

    def __init__(
        self,
        config: Config,
        user: str,
        server: str = "",
        *,
        hub_api_url: str,
        user_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.user = user
        self.server = server
        self.hub_api_url = hub_api_url.rstrip("/")
        self.user_options: dict[str, Any] = dict(user_options or {})
        self.api_token: str | None = None
        self.on_state: Callable[[], None] | None = None
        self.start_timeout: float | None = None
        #: The user's auth_state, set by the manager before :meth:`start` (see the class doc).
        self.auth_state: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.user!r}/{self.server!r}>"

    # --- the contract --------------------------------------------------------------------
    async def start(self) -> str:
        """Launch the server; return the URL the proxy forwards to."""
        raise NotImplementedError

    async def poll(self) -> int | None:
        """None while running, else an exit status."""
        raise NotImplementedError

    async def stop(self, now: bool = False) -> None:
        """Stop the server; ``now`` shortens the graceful period."""
        raise NotImplementedError

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        """Events to show while :meth:`start` runs; the default has none."""
        events: tuple[ProgressEvent, ...] = ()
        for event in events:
            yield event

    def exit_reason(self) -> str | None:
        """After :meth:`poll` reported the server ended, a user-safe explanation of why (e.g.
        ``"the server ran out of memory (limit 512 MiB)"``), or None when there is nothing
        better to say than the exit status. The hub shows it with the stopped server until its
        next start; it must not reveal anything the server's owner may not know."""
        return None

    def notices(self) -> list[str]:
        """While the server runs: user-safe notes for its owner's home page (default none)."""
        return []

    def auth_state_env(self, auth_state: Mapping[str, Any]) -> dict[str, str]:
        """Environment variables for the server from the user's auth_state (called only when
        there is one); e.g. ``{"ACCESS_TOKEN": auth_state["access_token"]}``. Default: none."""
        return {}

    def get_state(self) -> dict[str, Any]:
        """JSON-able state to store in the database."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (possibly from an older hub)."""

    def clear_state(self) -> None:
        """Forget the server (after it stopped)."""

    @property
    def can_resume_start(self) -> bool:
        """Whether :meth:`start`, called again after :meth:`load_state`, picks up the start a
        hub restart interrupted (default: no; the start then fails as ``interrupted``)."""
        return False

    def model_extra(self) -> dict[str, Any]:
        """Extra fields of the server's API model while it runs (default none)."""
        return {}

    # --- shared helpers ------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """The server's encoded URL prefix, ``<base_url>user/<name>/[<server>/]``."""
        return server_prefix(self.config.base_url, self.user, self.server)

    def contract_env(self, bind_url: str) -> dict[str, str]:
        """The ``JUPYTERHUB_*`` variables of CONTRACTS §2; ``bind_url`` is ``http://ip:port``."""
        if self.api_token is None:
            raise RuntimeError("api_token must be set before the server starts")
        cfg = self.config
        access = json.dumps(access_scopes(self.user, self.server))
        env = {
            "JUPYTERHUB_API_TOKEN": self.api_token,
            "JPY_API_TOKEN": self.api_token,
            "JUPYTERHUB_CLIENT_ID": client_id(self.user, self.server),
            "JUPYTERHUB_API_URL": self.hub_api_url,
            "JUPYTERHUB_ACTIVITY_URL": f"{self.hub_api_url}/{activity_path(self.user)}",
            "JUPYTERHUB_BASE_URL": url_base(cfg.base_url),
            "JUPYTERHUB_SERVICE_PREFIX": self.prefix,
            "JUPYTERHUB_SERVICE_URL": bind_url.rstrip("/") + self.prefix,
            "JUPYTERHUB_USER": self.user,
            "JUPYTERHUB_SERVER_NAME": self.server,
            "JUPYTERHUB_HOST": "",
            "JUPYTERHUB_OAUTH_CALLBACK_URL":
                oauth_callback_url(cfg.base_url, self.user, self.server),
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": access,
            "JUPYTERHUB_OAUTH_SCOPES": access,
            "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": access,
        }
        if cfg.admin_access:
            env["JUPYTERHUB_ADMIN_ACCESS"] = "1"
        if cfg.root_dir:
            env["JUPYTERHUB_ROOT_DIR"] = os.path.expanduser(str(cfg.root_dir))
        if cfg.default_url:
            env["JUPYTERHUB_DEFAULT_URL"] = str(cfg.default_url)
        if self.auth_state is not None:
            env.update({str(k): str(v) for k, v in self.auth_state_env(self.auth_state).items()})
        return env
