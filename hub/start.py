"""The hub's start-up sequence, as a short list of steps.

1. data directory and secrets; 2. database (schema checked); 3. first admin; 4. authenticator
and templates (:func:`prepare`); 5. the hub's port is bound, so its URL is known, but nothing is
served yet; 6. the proxy (started or attached), OAuth, the server manager, which resumes every
server's stored state (:func:`hub.services.wiring.build_hub`) — the :class:`HubContext` is now
whole; 7. the HTTP server starts answering (so ``/hub/health`` is 200 only once the hub can start
servers; connections made meanwhile wait in the listen backlog); 8. background loops. Stopping
the hub never stops users' servers or the proxy: they keep serving while the hub is away.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import jinja2
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from tornado.httpserver import HTTPServer

from hub import __version__
from hub.app import make_app
from hub.config import Config, ConfigError
from hub.context import Foundation, HubContext
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
)
from hub.services import auth, first_admin, isolation, users
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


def ensure_admins(cfg: Config, db: sessionmaker[Session],
                  check: users.NameCheck | None = None) -> None:
    """Make configured admins; on an empty database create ``admin`` with a random password."""
    with transaction(db) as session:
        first_admin.prune(cfg, session)
        empty = not session.scalar(select(func.count()).select_from(User))
        try:
            for name in cfg.admin_users:
                user = users.get(session, name) or users.create(session, name, check=check)
                user.admin = True
        except users.UserError as e:
            raise StartupError(f"admin_users: {e}") from None
        if not (empty and cfg.create_first_admin) or cfg.admin_users:
            return
        password = secrets.token_urlsafe(12)
        users.create(session, first_admin.USERNAME, admin=True, password=password)
    path = first_admin.save(cfg, password)
    saved = f"\n(also saved in {path}, readable only by you, until you change it)" if path else ""
    # Printed once, on stdout only (never logged): the operator's first way in.
    print(f"Created the first admin account: username 'admin', password {password}{saved}",
          flush=True)


def make_templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )


def prepare(cfg: Config) -> Foundation:
    """Steps 1–4: what the hub needs before it talks to anything else."""
    try:
        isolation.make_private(cfg)  # before the hub writes anything
        account_policy = isolation.check(cfg)
    except ConfigError as e:
        raise StartupError(str(e)) from None
    ensure_private_dir(cfg.data_path)
    try:
        cookie_secret = read_or_create(cfg.data_path / "cookie_secret")
    except InsecureSecretFile as e:
        raise StartupError(str(e)) from None
    db = open_database(cfg)
    ensure_admins(cfg, db, account_policy.check_name)
    try:
        authenticator = auth.load_class(cfg.authenticator)(db, cfg)
    except ValueError as e:
        raise StartupError(str(e)) from None
    return Foundation(
        config=cfg, db=db, authenticator=authenticator, templates=make_templates(),
        cookie_secret=cookie_secret,
        throttle=LoginThrottle(cfg.login_max_failures, cfg.login_throttle_window),
        identities=IdentityCache(db),
        accounts=account_policy,
    )


def bind_hub(cfg: Config) -> tuple[list[socket.socket], str]:
    """Step 5: bind the hub's port (0 picks one) without serving; returns the sockets and the
    hub's URL, which the proxy and user servers need before the hub answers."""
    try:
        sockets = bind(cfg.hub_ip, cfg.hub_port)
    except OSError as e:
        raise StartupError(f"cannot listen on {cfg.hub_ip}:{cfg.hub_port}: {e.strerror}") from None
    port = sockets[0].getsockname()[1]
    host = f"[{cfg.hub_ip}]" if ":" in cfg.hub_ip else cfg.hub_ip
    return sockets, f"http://{host}:{port}"


def bind(ip: str, port: int) -> list[socket.socket]:
    from tornado.netutil import bind_sockets

    return bind_sockets(port, address=ip, reuse_port=False)


def serve_http(hub: HubContext, sockets: list[socket.socket]) -> HTTPServer:
    """Step 7: answer requests on the bound sockets."""
    cfg = hub.config
    # No xheaders: Tornado would take X-Real-Ip and X-Forwarded-For from anyone; handlers read
    # the client address from BaseHandler.client_ip, which trusts only what our proxy appended.
    http = HTTPServer(make_app(hub), xheaders=False, max_body_size=max(cfg.api_body_limit,
                                                                      1024 * 1024))
    http.add_sockets(sockets)
    return http


async def start(cfg: Config) -> RunningHub:
    """Run every start-up step; raises :class:`StartupError` with a clear message."""
    from hub.services import wiring

    began = time.monotonic()
    base = prepare(cfg)
    sockets, hub_url = bind_hub(cfg)
    try:
        hub, public_url = await wiring.build_hub(base, hub_url)
    except wiring.StartupFailure as e:
        _close(sockets)
        raise StartupError(str(e)) from None
    except BaseException:
        _close(sockets)
        raise
    http = serve_http(hub, sockets)
    hub.metrics.hub_startup.observe(time.monotonic() - began)
    tasks = wiring.start_loops(hub)
    log.info("Himalia %s: hub at %s, public URL %s%s", __version__, hub_url, public_url,
             cfg.base_url)
    # Everything built so far lives as long as the hub: keep it out of the cyclic GC's
    # full collections, which otherwise rescan it all every few hundred API requests.
    gc.freeze()
    print(f"himalia: hub listening on {hub_url}, public URL {public_url}{cfg.base_url}",
          file=sys.stderr, flush=True)
    return RunningHub(hub, http, hub_url, public_url, tasks)


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


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
