"""Start-up and shutdown: :class:`ProxyServer` wires the pieces together; :func:`run` drives
it as a process (event loop, signals, the listening line).

Start-up, in order: replay the routes file; add ``--default-target`` as ``/``; listen on the
public port (TLS if configured) and on the API port. Shutdown (SIGTERM, SIGINT or
:meth:`ProxyServer.stop`): stop accepting, close idle connections and WebSocket tunnels, let
requests in flight finish for up to ``grace`` seconds, close the rest, fsync the journal.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from collections.abc import Callable

from .api import ApiApp, ApiConnection
from .config import ProxyConfig
from .errors import ErrorPages
from .journal import RouteJournal
from .messages import ProxyContext
from .metrics import ProxyCollector, ProxyStats, registry_for
from .server import ClientConnection
from .store import RouteStore
from .upstream import UpstreamPool

__all__ = ["LISTENING_PREFIX", "ProxyServer", "run"]

log = logging.getLogger(__name__)

LISTENING_PREFIX = "himalia-proxy: listening on "


def _url(scheme: str, server: asyncio.Server) -> str:
    host, port = server.sockets[0].getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


class ProxyServer:
    """The proxy as a library object.

    ``await start()`` binds both ports (``public_url``/``api_url`` then hold the real
    addresses, useful with port 0); ``await stop()`` shuts down gracefully. The hub runs the
    proxy as a separate process (``himalia-proxy``), but tests and embedders may use this.
    """

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        journal = RouteJournal(config.routes_file) if config.routes_file else None
        self.store = RouteStore(journal)
        self.pool = UpstreamPool(connect_timeout=config.timeout / 1000)
        self.connections: set[ClientConnection] = set()
        self.api_connections: set[ApiConnection] = set()
        self.stats = None if config.no_metrics else ProxyStats()
        self._servers: list[asyncio.Server] = []
        self.public_url = self.api_url = ""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self.store.clock = loop.time
        loaded = self.store.load()
        if loaded:
            log.info("Restored %d routes from %s", loaded, config.routes_file)
        if config.default_target:
            self.store.add("/", {"target": config.default_target})
        ctx = ProxyContext(
            store=self.store,
            pool=self.pool,
            error_pages=ErrorPages(config.error_target),
            now=loop.time,
            host_routing=config.host_routing,
            keep_alive_timeout=config.keep_alive_timeout / 1000,
            stats=self.stats,
        )
        tls = None
        if config.ssl_cert and config.ssl_key:
            tls = _tls_context(config.ssl_cert, config.ssl_key)

        def public() -> ClientConnection:
            return ClientConnection(ctx, self.connections, tls=tls is not None)

        metrics = None
        if self.stats is not None:
            store = self.store
            metrics = registry_for(ProxyCollector(self.stats, self.connections,
                                                  lambda: len(store)))
        app = ApiApp(self.store, config.auth_token, metrics, config.metrics_no_auth)

        def api() -> ApiConnection:
            return ApiConnection(app, self.api_connections)

        host = None if config.ip in ("", "*") else config.ip  # CHP reads "*" as all too
        proxy_server = await loop.create_server(public, host, config.port, ssl=tls, backlog=1024)
        self._servers.append(proxy_server)
        api_server = await loop.create_server(api, config.api_ip, config.effective_api_port)
        self._servers.append(api_server)
        self.public_url = _url("https" if tls else "http", proxy_server)
        self.api_url = _url("http", api_server)

    @property
    def listening_line(self) -> str:
        """The line the CLI prints once both ports accept connections."""
        return f"{LISTENING_PREFIX}{self.public_url}, api on {self.api_url}"

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, drain connections for up to ``grace`` seconds, close everything."""
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(conn.busy for conn in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for api_conn in list(self.api_connections):
            api_conn.close()
        self.pool.close()
        await asyncio.sleep(0)  # let transports deliver connection_lost
        if self.store.journal is not None:
            self.store.journal.close()


def _install_uvloop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop.new_event_loop


async def _serve(config: ProxyConfig) -> None:
    server = ProxyServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(server.listening_line, file=sys.stderr, flush=True)
    log.info("Serving %d routes", len(server.store))
    await stop.wait()
    log.info("Shutting down: finishing requests in flight")
    await server.stop()
    log.info("Stopped")


def run(config: ProxyConfig) -> None:
    """Run the proxy until SIGTERM/SIGINT, on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=_install_uvloop()) as runner:
        runner.run(_serve(config))
