"""Himalia's reverse proxy: the only process on the public port.

A pure-Python HTTP/1.1 and WebSocket reverse proxy with configurable-http-proxy's REST API,
built on asyncio protocols, httptools and (when installed) uvloop. Run it as a process with
``himalia-proxy`` (see :mod:`proxy.__main__`), or embed it::

    server = ProxyServer(ProxyConfig(port=0, api_port=0, auth_token="secret"))
    await server.start()
    ...
    await server.stop()

Modules, one concern each: :mod:`~proxy.paths` (canonical paths), :mod:`~proxy.routes`
(the trie), :mod:`~proxy.store` and :mod:`~proxy.journal` (the table and its file),
:mod:`~proxy.headers` (header rewriting), :mod:`~proxy.server` (client connections),
:mod:`~proxy.exchange` (one proxied request), :mod:`~proxy.upstream` (target connections and
their pool), :mod:`~proxy.websocket` (tunnels), :mod:`~proxy.errors` (error pages),
:mod:`~proxy.api` (REST API), :mod:`~proxy.config` and :mod:`~proxy.app` (start-up).
This package imports nothing from ``hub`` or ``singleuser``.
"""

from .app import ProxyServer, run
from .config import ProxyConfig

__all__ = ["ProxyConfig", "ProxyServer", "run"]
