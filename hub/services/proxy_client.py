"""Control of the proxy: a CHP-dialect REST client, and a launcher that starts or attaches to one.

:class:`ProxyClient` speaks configurable-http-proxy's REST API (CONTRACTS §4), so it drives our
``himalia-proxy`` and CHP alike. Routing keys are plain (percent-*decoded*) paths without a
trailing slash, as CHP stores them; the client encodes them on the wire.

:class:`ProxyLauncher` gives the hub a proxy: with ``proxy_api_url`` configured it attaches to
that one (token from ``CONFIGPROXY_AUTH_TOKEN``); otherwise it starts ``himalia-proxy`` in its own
session so that it outlives the hub, and records it in ``<data_dir>/proxy.json`` (0600: pid,
start time, URLs and the API token, which is generated once and never put in argv). A restarted
hub attaches to the recorded proxy if that very process (pid *and* start time) still answers with
the token. :meth:`ProxyLauncher.check_routes` is the periodic repair: it restarts a proxy we own
that died and puts back any missing route.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from hub.config import Config
from hub.secrets_store import write_private
from hub.services import procinfo
from hub.services.server_names import PATH_SAFE, url_base
from hub.services.tokens import new_secret

log = logging.getLogger(__name__)

TOKEN_ENV = "CONFIGPROXY_AUTH_TOKEN"
# CHP's (and our proxy's) --log-level names for the hub's levels.
PROXY_LOG_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error",
                    "CRITICAL": "error"}
LISTENING = re.compile(r"himalia-proxy: listening on (\S+?), api on (\S+)")


class ProxyError(RuntimeError):
    """The proxy could not be reached, refused a call, or could not be started."""


@dataclass(frozen=True)
class Route:
    """Where a routing key forwards to, and the extra data stored with it."""

    target: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RouteSync:
    """What one :meth:`ProxyClient.sync_routes` changed (for logs and tests)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: bool = False


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def route_key(path: str) -> str:
    """A routing key in canonical form: an encoded path with a leading ``/`` and no trailing
    ``/`` (except the root); escapes of unreserved characters decoded, the others upper-case.

    Our proxy reports keys in this form; CHP reports them decoded (``/user/a b``), which
    quoting brings to the same form, so tables of both dialects compare equal to ours.
    """
    path = quote("/" + path.lstrip("/"), safe=PATH_SAFE)

    def fix(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else "%" + m.group(1).upper()

    return _ESCAPE.sub(fix, path).rstrip("/") or "/"


class ProxyClient:
    """REST client of a CHP-dialect proxy API. Every call raises :class:`ProxyError` on failure."""

    def __init__(self, api_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        #: ``observe(method, url, seconds, ok)`` after every API call (the hub's metrics).
        self.observe: Callable[[str, str, float, bool], None] | None = None

    def __repr__(self) -> str:
        return f"<ProxyClient {self.api_url}>"  # never the token

    def reconfigure(self, api_url: str | None = None, token: str | None = None) -> None:
        """Point at another (e.g. restarted) proxy; every holder of this client follows."""
        if api_url:
            self.api_url = api_url.rstrip("/")
        if token:
            self._token = token

    def _url(self, path: str) -> str:
        # Keys are encoded paths already: CHP decodes the API path (and request paths) before
        # matching, our proxy canonicalizes both; either way the key goes on the wire as is.
        # The root route is /api/routes/ (CHP reads the empty rest as "/").
        key = route_key(path)
        return self.api_url + "/api/routes" + key

    async def _request(
        self, method: str, url: str, body: Any = None, ok: tuple[int, ...] = (200,)
    ) -> HTTPResponse:
        began = time.monotonic()
        try:
            resp = await self._send(method, url, body, ok)
        except ProxyError:
            if self.observe is not None:
                self.observe(method, url, time.monotonic() - began, False)
            raise
        if self.observe is not None:
            self.observe(method, url, time.monotonic() - began, True)
        return resp

    async def _send(
        self, method: str, url: str, body: Any, ok: tuple[int, ...]
    ) -> HTTPResponse:
        req = HTTPRequest(
            url, method=method, headers={"Authorization": f"token {self._token}",
                                         "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None,
            request_timeout=self.timeout, connect_timeout=min(self.timeout, 5.0),
            follow_redirects=False, allow_nonstandard_methods=True,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except (TimeoutError, OSError, HTTPClientError) as e:
            raise ProxyError(f"proxy API {method} {url}: {e}") from None
        if resp.code == 599:  # tornado's "no HTTP response" (refused, reset, timed out)
            raise ProxyError(f"proxy API {method} {url}: {resp.error}")
        if resp.code == 403:
            raise ProxyError(f"proxy API {method} {url}: 403, the proxy rejected our token")
        if resp.code not in ok:
            raise ProxyError(f"proxy API {method} {url}: unexpected status {resp.code}")
        return resp

    async def get_routes(self, inactive_since: datetime | None = None) -> dict[str, dict[str, Any]]:
        """The whole routing table: ``{key: {"target": url, "last_activity": ISO, ...data}}``."""
        url = self.api_url + "/api/routes"
        if inactive_since is not None:
            url += "?" + urlencode({"inactive_since": inactive_since.isoformat()})
        resp = await self._request("GET", url)
        try:
            routes = json.loads(resp.body)
        except ValueError:
            raise ProxyError(f"proxy API GET {url}: the answer is not JSON") from None
        if not isinstance(routes, dict):
            raise ProxyError(f"proxy API GET {url}: the answer is not a JSON object")
        return {route_key(k): v for k, v in routes.items() if isinstance(v, dict)}

    async def get_route(self, path: str) -> dict[str, Any] | None:
        """One route, or None when there is none."""
        resp = await self._request("GET", self._url(path), ok=(200, 404))
        if resp.code == 404:
            return None
        data = json.loads(resp.body)
        return data if isinstance(data, dict) else None

    async def add_route(self, path: str, target: str, data: Mapping[str, Any] | None = None,
                        ) -> None:
        """Add (or replace) a route to ``target``, storing ``data`` with it."""
        body = {**(data or {}), "target": target}
        await self._request("POST", self._url(path), body, ok=(200, 201, 204))
        log.info("proxy route %s -> %s", route_key(path), target)

    async def delete_route(self, path: str) -> None:
        """Remove a route; a route that is already gone is fine."""
        await self._request("DELETE", self._url(path), ok=(200, 204, 404))
        log.info("proxy route %s removed", route_key(path))

    async def ping(self) -> bool:
        """Whether the API answers our token."""
        try:
            await self.get_routes()
        except ProxyError:
            return False
        return True

    async def sync_routes(self, wanted: Mapping[str, Route]) -> RouteSync:
        """Make the table hold ``wanted``: add missing or retargeted routes, and delete routes
        marked ``"jupyterhub": true`` that are not wanted (others belong to someone else)."""
        wanted = {route_key(k): v for k, v in wanted.items()}
        current = await self.get_routes()
        out = RouteSync()
        for key, route in wanted.items():
            have = current.get(key)
            if have is None or have.get("target") != route.target or any(
                have.get(k) != v for k, v in route.data.items()
            ):
                await self.add_route(key, route.target, route.data)
                out.added.append(key)
        for key, have in current.items():
            if key not in wanted and have.get("jupyterhub"):
                await self.delete_route(key)
                out.removed.append(key)
        if out.added or out.removed:
            log.warning("proxy routes repaired: added %s, removed %s", out.added, out.removed)
        return out


def proxy_command() -> list[str]:
    """``himalia-proxy`` next to our interpreter (a virtualenv's bin), else ``python -m proxy``."""
    script = Path(sys.executable).with_name("himalia-proxy")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "proxy"]


class ProxyLauncher:
    """Starts ``himalia-proxy`` or attaches to a running proxy; see the module docstring.

    ``hub_url`` is the hub's internal URL (``http://127.0.0.1:8081``), or a callable returning it
    (the hub may listen on a port picked at start-up).
    """

    ready_timeout = 20.0  # seconds a freshly started proxy has to print its listening line
    term_timeout = 5.0
    #: Seconds between the cheap checks (a /proc read) that a proxy we own is still alive: a
    #: dead proxy takes every server offline, so it must not wait for the next full check.
    liveness_interval = 1.0

    def __init__(self, config: Config, hub_url: str | Callable[[], str], *,
                 environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._hub_url = hub_url
        self.environ = os.environ if environ is None else environ
        self.client: ProxyClient | None = None
        self.public_url: str | None = None
        self.api_url: str | None = None
        self.pid: int | None = None  # set when the proxy is ours (we may restart it)
        self.start_time: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._token = ""
        self._stopped = False
        #: Called with the seconds each successful :meth:`check_routes` took (metrics).
        self.on_checked: Callable[[float], None] | None = None

    @property
    def hub_url(self) -> str:
        return (self._hub_url() if callable(self._hub_url) else self._hub_url).rstrip("/")

    @property
    def record_path(self) -> Path:
        return self.config.data_path / "proxy.json"

    @property
    def owned(self) -> bool:
        """Whether the proxy is one we started (now or before a hub restart)."""
        return self.pid is not None

    def hub_route(self) -> Route:
        return Route(self.hub_url, {"hub": True, "jupyterhub": True})

    # --- start / attach ------------------------------------------------------------------
    async def start(self) -> ProxyClient:
        """Attach to the configured or recorded proxy, else launch one; returns its client."""
        if self.config.proxy_api_url:
            return await self._attach_external()
        record = self._read_record()
        self._token = str(record.get("token") or new_secret())
        if await self._attach_recorded(record):
            log.info("attached to the running proxy (pid %s) at %s", self.pid, self.api_url)
        else:
            await self._launch(self.config.port, self.config.proxy_api_port)
        assert self.client is not None
        await self.client.add_route("/", self.hub_route().target, self.hub_route().data)
        return self.client

    async def _attach_external(self) -> ProxyClient:
        token = self.environ.get(TOKEN_ENV, "")
        if not token:
            raise ProxyError(f"proxy_api_url is set but {TOKEN_ENV} is not")
        self.api_url = self.config.proxy_api_url.rstrip("/")
        self.client = ProxyClient(self.api_url, token)
        if not await self.client.ping():
            raise ProxyError(f"the proxy API at {self.api_url} does not answer with our token")
        await self.client.add_route("/", self.hub_route().target, self.hub_route().data)
        log.info("attached to the proxy at %s", self.api_url)
        return self.client

    def _read_record(self) -> dict[str, Any]:
        try:
            data = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_record(self) -> None:
        self.config.data_path.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"public_url": self.public_url, "api_url": self.api_url,
                                  "token": self._token}
        if self.pid is not None:  # absent once stopped: nothing to attach to, nothing to kill
            record.update(pid=self.pid, start_time=self.start_time)
        write_private(self.record_path, json.dumps(record))

    def _compatible(self, record: Mapping[str, Any]) -> bool:
        """Whether the recorded proxy listens where the configuration now asks."""
        cfg = self.config
        for url, host, port in ((record.get("public_url"), cfg.ip, cfg.port),
                                (record.get("api_url"), cfg.proxy_api_ip, cfg.proxy_api_port)):
            if not isinstance(url, str):
                return False
            parts = urlsplit(url)
            if parts.hostname != host or (port and parts.port != port):
                return False
        return True

    async def _attach_recorded(self, record: Mapping[str, Any]) -> bool:
        pid, started = record.get("pid"), record.get("start_time")
        if not isinstance(pid, int) or not isinstance(started, int):
            return False
        if not procinfo.is_alive(pid, started):
            return False
        client = ProxyClient(str(record.get("api_url")), self._token)
        if self._compatible(record) and await client.ping():
            self.pid, self.start_time = pid, started
            self.public_url, self.api_url = record.get("public_url"), client.api_url
            self.client = client
            self._write_record()
            return True
        # Ours, but wedged or listening elsewhere than configured: replace it.
        log.warning("replacing the recorded proxy (pid %d)", pid)
        await procinfo.terminate(pid, started, self.term_timeout)
        return False

    def _command(self, port: int, api_port: int) -> list[str]:
        cfg = self.config
        return [
            *proxy_command(),
            "--ip", cfg.ip, "--port", str(port),
            "--api-ip", cfg.proxy_api_ip, "--api-port", str(api_port),
            "--default-target", self.hub_url,
            "--error-target", self.hub_url + url_base(cfg.base_url) + "hub/error",
            "--routes-file", str(cfg.data_path / "proxy-routes.jsonl"),
            "--log-level", PROXY_LOG_LEVELS.get(str(cfg.log_level).upper(), "info"),
        ]

    def _env(self) -> dict[str, str]:
        # The proxy gets the hub's environment minus the hub's own settings and secrets;
        # its token travels here, never in argv (visible to every local user in ps).
        env = {k: v for k, v in self.environ.items()
               if not k.startswith("HIMALIA_") and k != TOKEN_ENV}
        env[TOKEN_ENV] = self._token
        return env

    async def _launch(self, port: int, api_port: int) -> None:
        data = self.config.data_path
        data.mkdir(parents=True, exist_ok=True)
        log_path = data / "proxy.log"
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        offset = os.fstat(log_fd).st_size
        try:
            # Output to a file, not a pipe: the proxy outlives the hub, a pipe would not.
            proc = subprocess.Popen(
                self._command(port, api_port), env=self._env(), stdin=subprocess.DEVNULL,
                stdout=log_fd, stderr=log_fd, start_new_session=True, close_fds=True,
            )
        except OSError as e:
            raise ProxyError(f"cannot run the proxy: {e}") from None
        finally:
            os.close(log_fd)
        self._proc, self.pid = proc, proc.pid
        self.start_time = procinfo.start_time(proc.pid)
        self.public_url, self.api_url = await self._wait_listening(proc, log_path, offset)
        if self.client is None:
            self.client = ProxyClient(self.api_url, self._token)
        else:
            self.client.reconfigure(self.api_url, self._token)
        self._write_record()
        log.info("started the proxy (pid %d): public %s, api %s", proc.pid, self.public_url,
                 self.api_url)

    async def _wait_listening(self, proc: subprocess.Popen[bytes], log_path: Path,
                              offset: int) -> tuple[str, str]:
        """The (public, api) URLs from the proxy's listening line (real ports, even for 0)."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            text = _read_from(log_path, offset)
            found = LISTENING.search(text)
            if found:
                return found.group(1).rstrip(","), found.group(2)
            status = proc.poll()
            if status is not None:
                tail = " | ".join(text.strip().splitlines()[-5:])
                raise ProxyError(f"the proxy exited with status {status}: {tail}")
            if time.monotonic() > deadline:
                await procinfo.terminate(proc.pid, self.start_time, 1.0, reaper=self._reap)
                raise ProxyError(f"the proxy did not start listening within "
                                 f"{self.ready_timeout:g}s (see {log_path})")
            await asyncio.sleep(0.05)

    # --- supervision ---------------------------------------------------------------------
    def alive(self) -> bool:
        """Whether the proxy we own is running (True for a proxy that is not ours)."""
        if not self.owned or self.pid is None:
            return True
        # One reading decides and reaps: a proxy that exits between two readings would
        # otherwise be judged dead yet stay an unreaped child.
        stat = procinfo.read_stat(self.pid)
        if stat is not None and stat.start_time == self.start_time and not stat.zombie:
            return True
        if self._proc is not None and self._proc.pid == self.pid:
            self._proc.poll()  # collect our child (its status, or ECHILD if reaped elsewhere)
        return False

    def _reap(self, pid: int) -> object:
        return procinfo.popen_reaper(self._proc)(pid)

    async def ensure_running(self) -> bool:
        """Restart the proxy if it is ours and died (same ports and token); True if restarted."""
        if self._stopped or self.alive():
            return False
        log.warning("the proxy (pid %s) is gone; restarting it", self.pid)
        await procinfo.wait_gone(self.pid or 0, self.start_time, 0, reaper=self._reap)
        port = urlsplit(self.public_url or "").port or self.config.port
        api_port = urlsplit(self.api_url or "").port or self.config.proxy_api_port
        await self._launch(port, api_port)
        return True

    async def check_routes(self, wanted: Mapping[str, Route]) -> RouteSync:
        """Restart a dead proxy of ours, then make its table hold the hub route and ``wanted``."""
        began = time.monotonic()
        restarted = await self.ensure_running()
        if self.client is None:
            raise ProxyError("the proxy was not started")
        sync = await self.client.sync_routes({**wanted, "/": self.hub_route()})
        sync.restarted = restarted
        if self.on_checked is not None:
            self.on_checked(time.monotonic() - began)
        return sync

    async def check_loop(self, wanted: Callable[[], Mapping[str, Route]]) -> None:
        """Run :meth:`check_routes` every ``proxy_check_interval`` seconds, and at once when
        the proxy we own has died (checked every ``liveness_interval``), until cancelled."""
        interval = self.config.proxy_check_interval
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(self.liveness_interval, interval))
            if time.monotonic() - last < interval and self.alive():
                continue
            last = time.monotonic()
            try:
                await self.check_routes(wanted())
            except ProxyError as e:
                log.error("proxy check failed: %s", e)
            except Exception:
                log.exception("proxy check failed")

    async def stop(self) -> None:
        """Stop the proxy if it is ours (shutdown paths and tests; a hub restart keeps it)."""
        self._stopped = True
        if not self.owned:
            return
        await procinfo.terminate(self.pid or 0, self.start_time, self.term_timeout,
                                 reaper=self._reap)
        self.pid = self.start_time = self._proc = None
        self._write_record()


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(65536).decode("utf-8", "replace")
    except OSError:
        return ""
