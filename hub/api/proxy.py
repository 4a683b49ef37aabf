"""``/hub/api/proxy`` — the proxy's routing table, a re-sync now, and pointing at a new proxy.

All three need the ``proxy`` scope.

- ``GET``: the hub's routes (those marked ``"jupyterhub": true``) in JupyterHub's format,
  ``{"/user/alice/": {"routespec", "target", "data"}}``, sorted and paginated by ``offset`` /
  ``limit`` (an object, not a list, also inside the paginated envelope, as JupyterHub does).
- ``POST``: restart a dead proxy of ours and put back missing routes, now (what the periodic
  check does); answers what changed.
- ``PATCH {"ip", "port", "protocol", "auth_token"}`` (or ``"api_url"``): point the hub at
  another (restarted) proxy's API. The new proxy must answer with the token before anything
  changes (else 400 and the hub keeps the old one); then the routes are synced to it. The hub
  stops supervising a proxy it had started itself. This lasts until the hub restarts: make it
  permanent with ``proxy_api_url`` and ``CONFIGPROXY_AUTH_TOKEN``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, cast
from urllib.parse import urlsplit

from hub.api import pagination
from hub.api.base import APIHandler
from hub.handlers.base import HubError
from hub.services.proxy_client import ProxyClient, ProxyError, ProxyLauncher, Route

log = logging.getLogger(__name__)


def routespec(key: str) -> str:
    """A routing key as JupyterHub spells it: with a trailing slash."""
    return key if key.endswith("/") else key + "/"


def jupyterhub_routes(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The hub's routes of a CHP routing table, in JupyterHub's ``/proxy`` format."""
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(table):
        data = dict(table[key])
        if not data.pop("jupyterhub", False):
            continue  # someone else's route
        target = data.pop("target", None)
        out[routespec(key)] = {"routespec": routespec(key), "target": target, "data": data}
    return out


def new_api_url(current: str, data: dict[str, Any]) -> str:
    """The API URL a ``PATCH`` asks for: ``api_url``, or the current one with ``protocol``,
    ``ip`` and ``port`` replaced (unchanged when none of them is given)."""
    if not {"api_url", "protocol", "ip", "port"} & set(data):
        return current
    if "api_url" in data:
        url = str(data["api_url"])
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HubError(400, "api_url must be an http(s) URL")
        return url.rstrip("/")
    parts = urlsplit(current)
    protocol = str(data.get("protocol", parts.scheme or "http"))
    if protocol not in ("http", "https"):
        raise HubError(400, "protocol must be http or https")
    ip = str(data.get("ip", parts.hostname or ""))
    if not ip or any(c in ip for c in "/@?#[] "):
        raise HubError(400, "ip must be a host name or address")
    try:
        port = int(data.get("port", parts.port or (443 if protocol == "https" else 80)))
    except ValueError:
        raise HubError(400, "port must be a number") from None
    if not 0 < port < 65536:
        raise HubError(400, "port must be between 1 and 65535")
    host = f"[{ip}]" if ":" in ip else ip
    return f"{protocol}://{host}:{port}"


class ProxyHandler(APIHandler):
    """``GET`` routing table, ``POST`` re-sync, ``PATCH`` new proxy (see the module docstring)."""

    def _parts(self) -> tuple[ProxyLauncher, ProxyClient]:
        self.require("proxy")
        return self.hub.proxy_launcher, self.hub.proxy

    def _wanted(self) -> dict[str, Route]:
        return dict(self.hub.wanted_routes())

    async def get(self) -> None:
        _, client = self._parts()
        page = pagination.parse(self)
        try:
            table = jupyterhub_routes(await client.get_routes())
        except ProxyError as e:
            log.error("reading the routing table failed: %s", e)
            raise HubError(503, "The proxy does not answer") from None
        keys = list(table)[page.offset:page.offset + page.limit]
        window = {k: table[k] for k in keys}
        # JupyterHub pages this table as an object, not a list.
        pagination.respond(self, page, cast(list[Any], window), len(table))

    async def post(self) -> None:
        self.json_body({})  # no body, or an empty object
        launcher, _ = self._parts()
        try:
            sync = await launcher.check_routes(self._wanted())
        except ProxyError as e:
            log.error("route sync requested by the API failed: %s", e)
            raise HubError(503, "The proxy does not answer") from None
        self.write_json({"added": [routespec(k) for k in sync.added],
                         "removed": [routespec(k) for k in sync.removed],
                         "restarted": sync.restarted})

    async def patch(self) -> None:
        data = self.json_body({"ip": str, "port": (int, str), "protocol": str,
                               "auth_token": str, "api_url": str})
        launcher, client = self._parts()
        if not data:
            raise HubError(400, "Nothing to change: give ip, port, protocol, auth_token "
                                "or api_url")
        url = new_api_url(client.api_url, data)
        token = data.get("auth_token") or None
        trial = copy.copy(client)  # the same token unless a new one is given
        trial.reconfigure(url, token)
        if not await trial.ping():
            raise HubError(400, f"The proxy at {url} does not answer with that token; "
                                "nothing was changed")
        if url != launcher.api_url and launcher.owned:
            log.warning("no longer supervising the proxy we started (pid %s)", launcher.pid)
            launcher.pid = launcher.start_time = None
        launcher.api_url = url
        client.reconfigure(url, token)
        log.info("the hub now uses the proxy API at %s", url)
        try:
            sync = await launcher.check_routes(self._wanted())
        except ProxyError as e:
            log.error("route sync with the new proxy failed: %s", e)
            raise HubError(503, "The new proxy stopped answering") from None
        self.write_json({"api_url": url, "added": [routespec(k) for k in sync.added]})


routes = [
    (r"api/proxy", ProxyHandler),
]
