"""The hub's start-up sequence, as a short list of steps.

1. data directory and secrets; 2. database (schema checked); 3. first admin; 4. services
(authenticator, templates, OAuth); 5. the hub's HTTP server; 6. the proxy (started or attached);
7. re-attach to user servers still running from before; 8. background loops. Stopping the hub
never stops users' servers or the proxy: they keep serving while the hub is away.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import jinja2
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from tornado.httpserver import HTTPServer

from hub import __version__
from hub.app import make_app
from hub.config import Config
from hub.context import HubContext
from hub.db.database import (
    SchemaOutdated,
    check_schema,
    make_engine,
    make_sessionmaker,
    transaction,
)
from hub.db.models import User
from hub.paths import template_dir
from hub.secrets_store import (
    InsecureSecretFile,
    ensure_private_dir,
    read_or_create,
    write_private,
)
from hub.services import auth, users
from hub.services.identity import IdentityCache
from hub.services.throttle import LoginThrottle

log = logging.getLogger("hub")


class StartupError(RuntimeError):
    """The hub cannot start; the message says what to do."""


@dataclass
class RunningHub:
    """A started hub: its context, HTTP server and background tasks."""

    hub: HubContext
    http: HTTPServer
    hub_url: str
    public_url: str
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="[%(levelname).1s %(asctime)s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("tornado.access").setLevel(logging.WARNING)


def open_database(cfg: Config) -> sessionmaker[Session]:
    engine = make_engine(cfg.database_url)
    try:
        check_schema(engine)
    except SchemaOutdated as e:
        raise StartupError(str(e)) from None
    return make_sessionmaker(engine)


def ensure_admins(cfg: Config, db: sessionmaker[Session]) -> None:
    """Make configured admins; on an empty database create ``admin`` with a random password."""
    with transaction(db) as session:
        empty = not session.scalar(select(func.count()).select_from(User))
        for name in cfg.admin_users:
            user = users.get(session, name) or users.create(session, name)
            user.admin = True
        if not (empty and cfg.create_first_admin) or cfg.admin_users:
            return
        password = secrets.token_urlsafe(12)
        users.create(session, "admin", admin=True, password=password)
    path = cfg.data_path / "admin-password"
    write_private(path, password + "\n")
    # Printed once, on stdout only (never logged): the operator's first way in.
    print(f"Created the first admin account: username 'admin', password {password}\n"
          f"(also saved in {path}, readable only by you)", flush=True)


def make_templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )


def build_context(cfg: Config) -> HubContext:
    ensure_private_dir(cfg.data_path)
    try:
        cookie_secret = read_or_create(cfg.data_path / "cookie_secret")
    except InsecureSecretFile as e:
        raise StartupError(str(e)) from None
    db = open_database(cfg)
    ensure_admins(cfg, db)
    try:
        authenticator = auth.load_class(cfg.authenticator)(db)
    except ValueError as e:
        raise StartupError(str(e)) from None
    return HubContext(
        config=cfg, db=db, authenticator=authenticator, templates=make_templates(),
        cookie_secret=cookie_secret,
        throttle=LoginThrottle(cfg.login_max_failures, cfg.login_throttle_window),
        identities=IdentityCache(db),
    )


def listen(hub: HubContext) -> tuple[HTTPServer, str]:
    cfg = hub.config
    http = HTTPServer(make_app(hub), xheaders=True, max_body_size=max(cfg.api_body_limit,
                                                                      1024 * 1024))
    try:
        sockets = bind(cfg.hub_ip, cfg.hub_port)
    except OSError as e:
        raise StartupError(f"cannot listen on {cfg.hub_ip}:{cfg.hub_port}: {e.strerror}") from None
    http.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    host = f"[{cfg.hub_ip}]" if ":" in cfg.hub_ip else cfg.hub_ip
    return http, f"http://{host}:{port}"


def bind(ip: str, port: int) -> list[socket.socket]:
    from tornado.netutil import bind_sockets

    return bind_sockets(port, address=ip, reuse_port=False)


async def start(cfg: Config) -> RunningHub:
    """Run every start-up step; raises :class:`StartupError` with a clear message."""
    hub = build_context(cfg)
    http, hub_url = listen(hub)
    try:
        public_url, tasks = await start_services(hub, hub_url)
    except Exception:
        http.stop()
        raise
    log.info("Himalia %s: hub at %s, public URL %s%s", __version__, hub_url, public_url,
             cfg.base_url)
    # Everything built so far lives as long as the hub: keep it out of the cyclic GC's
    # full collections, which otherwise rescan it all every few hundred API requests.
    gc.freeze()
    print(f"himalia: hub listening on {hub_url}, public URL {public_url}{cfg.base_url}",
          file=sys.stderr, flush=True)
    return RunningHub(hub, http, hub_url, public_url, tasks)


async def start_services(hub: HubContext, hub_url: str) -> tuple[str, list[asyncio.Task[Any]]]:
    """Proxy, OAuth, server manager, re-attachment and background loops."""
    from hub.services.wiring import StartupFailure
    from hub.services.wiring import start_services as wire

    try:
        return await wire(hub, hub_url)
    except StartupFailure as e:
        raise StartupError(str(e)) from None


async def serve(cfg: Config) -> int:
    running = await start(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping the hub (user servers and the proxy keep running)")
    running.http.stop()
    for task in running.tasks:
        task.cancel()
    await asyncio.gather(*running.tasks, return_exceptions=True)
    await running.http.close_all_connections()
    return 0


def run(cfg: Config) -> int:
    """Entry point used by ``himalia``: run until SIGTERM/SIGINT; returns an exit code."""
    setup_logging(cfg.log_level)
    try:
        return asyncio.run(serve(cfg))
    except StartupError as e:
        log.error("%s", e)
        print(f"himalia: error: {e}", file=sys.stderr)
        return 1
