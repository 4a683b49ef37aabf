"""A tiny stand-in for the hub, for testing the single-user server over real HTTP.

:class:`FakeHub` runs a Tornado app on an ephemeral loopback port in a background thread (so
tests can use blocking clients such as ``requests``) and implements just the hub side of
``../shared/CONTRACTS.md`` that ``himalia-singleuser`` relies on, under a base URL (by
default one with a space and an ``@``):

- ``GET  {base}hub/api/`` → ``{"version": ...}`` without auth;
- ``GET  {base}hub/api/user`` → the token owner's model with ``scopes``; 403 for bad tokens;
- ``GET  {base}hub/api/oauth2/authorize`` → auto-approves the user named in the
  ``X-Fakehub-User`` request header (our stand-in for the hub login cookie): checks
  ``client_id``, exact ``redirect_uri`` and PKCE parameters, then redirects with a code;
- ``POST {base}hub/api/oauth2/token`` → form-encoded code exchange with PKCE check;
  codes are single-use;
- ``POST {base}hub/api/users/<name>/activity`` → records the JSON body (server token only).

Every other path is forwarded to :attr:`FakeHub.target` (a user server) like the proxy would,
so a browser-like client sees one origin. Each request is recorded in :attr:`FakeHub.calls`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

DEFAULT_BASE_URL = "/my hub@/"

_SKIP_RESPONSE_HEADERS = {"content-length", "transfer-encoding", "connection", "server", "date"}


@dataclass
class TokenInfo:
    """Who a token belongs to and which scopes it carries."""

    name: str
    scopes: list[str]
    kind: str = "user"


@dataclass
class Client:
    """A registered OAuth client (a user server)."""

    client_id: str
    secret: str
    redirect_uri: str


@dataclass
class CodeGrant:
    """An issued, not yet used authorization code."""

    user: str
    client_id: str
    redirect_uri: str
    challenge: str


@dataclass
class FakeHubState:
    """Everything the fake hub knows; shared by its handlers."""

    tokens: dict[str, TokenInfo] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, CodeGrant] = field(default_factory=dict)
    scopes_for: dict[str, list[str]] = field(default_factory=dict)
    activity: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    target: str | None = None


class _Base(web.RequestHandler):
    def initialize(self, state: FakeHubState) -> None:
        self.state = state

    def prepare(self) -> None:
        self.state.calls.append((self.request.method or "", self.request.path))

    def token_info(self) -> TokenInfo | None:
        m = re.match(r"(?:token|bearer)\s+(\S+)", self.request.headers.get("Authorization", ""),
                     re.IGNORECASE)
        return self.state.tokens.get(m.group(1)) if m else None

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def check_xsrf_cookie(self) -> None:
        pass


class RootHandler(_Base):
    def get(self) -> None:
        self.send_json({"version": "5.0.0"})


class UserHandler(_Base):
    def get(self) -> None:
        info = self.token_info()
        if info is None:
            self.send_json({"status": 403, "message": "invalid token"}, 403)
            return
        self.send_json({"kind": info.kind, "name": info.name, "admin": False,
                        "scopes": list(info.scopes), "groups": [], "roles": []})


class AuthorizeHandler(_Base):
    def get(self) -> None:
        user = self.request.headers.get("X-Fakehub-User")
        if not user:
            self.send_json({"status": 403, "message": "not logged in to the hub"}, 403)
            return
        client = self.state.clients.get(self.get_argument("client_id", ""))
        redirect_uri = self.get_argument("redirect_uri", "")
        if client is None or redirect_uri != client.redirect_uri:
            self.send_json({"status": 400, "message": "bad client_id or redirect_uri"}, 400)
            return
        if (self.get_argument("response_type", "") != "code"
                or self.get_argument("code_challenge_method", "") != "S256"
                or not self.get_argument("code_challenge", "")):
            self.send_json({"status": 400, "message": "bad response_type or PKCE"}, 400)
            return
        code = secrets.token_urlsafe(16)
        self.state.codes[code] = CodeGrant(user, client.client_id, redirect_uri,
                                           self.get_argument("code_challenge"))
        query = urlencode({"code": code, "state": self.get_argument("state", "")})
        self.redirect(f"{quote(redirect_uri, safe='/%@:')}?{query}")


class TokenHandler(_Base):
    def post(self) -> None:
        args = {k: self.get_body_argument(k, "") for k in (
            "client_id", "client_secret", "grant_type", "code", "redirect_uri", "code_verifier")}
        client = self.state.clients.get(args["client_id"])
        if client is None or client.secret != args["client_secret"]:
            self.send_json({"error": "invalid_client"}, 401)
            return
        grant = self.state.codes.pop(args["code"], None)
        digest = hashlib.sha256(args["code_verifier"].encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if (args["grant_type"] != "authorization_code" or grant is None
                or grant.client_id != client.client_id
                or grant.redirect_uri != args["redirect_uri"] or grant.challenge != challenge):
            self.send_json({"error": "invalid_grant"}, 400)
            return
        token = secrets.token_hex(16)
        scopes = self.state.scopes_for.get(grant.user, [f"access:servers!user={grant.user}"])
        self.state.tokens[token] = TokenInfo(grant.user, scopes)
        self.send_json({"access_token": token, "token_type": "Bearer", "expires_in": 3600})


class ActivityHandler(_Base):
    def post(self, name: str) -> None:
        info = self.token_info()
        if info is None or f"users:activity!user={name}" not in info.scopes:
            self.send_json({"status": 403, "message": "no users:activity scope"}, 403)
            return
        self.state.activity.append((name, json.loads(self.request.body)))
        self.set_status(204)


class ProxyHandler(_Base):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    async def _forward(self) -> None:
        if self.state.target is None:
            self.send_json({"status": 404, "message": "no route"}, 404)
            return
        headers = dict(self.request.headers.get_all())
        response = await AsyncHTTPClient().fetch(
            HTTPRequest(self.state.target + self.request.uri, method=self.request.method or "GET",
                        headers=headers, body=self.request.body or None,
                        follow_redirects=False, allow_nonstandard_methods=True,
                        request_timeout=60),
            raise_error=False)
        self.set_status(response.code, response.reason)
        for key, value in response.headers.get_all():
            if key.lower() == "set-cookie":
                self.add_header(key, value)
            elif key.lower() not in _SKIP_RESPONSE_HEADERS:
                self.set_header(key, value)
        if response.body:
            self.write(response.body)

    get = head = post = put = patch = delete = options = _forward


class FakeHub:
    """The fake hub server; use as a context manager or call :meth:`start`/:meth:`stop`."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL) -> None:
        self.base_url = base_url
        self.base_path = quote(base_url, safe="/%@")
        self.state = FakeHubState()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: HTTPServer | None = None

    # ----- configuration used by tests
    @property
    def url(self) -> str:
        """The origin, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """``JUPYTERHUB_API_URL`` for servers using this hub."""
        return f"{self.url}{self.base_path}hub/api"

    def register_client(self, client_id: str, secret: str, redirect_uri: str) -> None:
        """Register a user server's OAuth client."""
        self.state.clients[client_id] = Client(client_id, secret, redirect_uri)

    def add_token(self, name: str, scopes: list[str], kind: str = "user") -> str:
        """Issue an API token for ``name`` with ``scopes``; returns it."""
        token = secrets.token_hex(16)
        self.state.tokens[token] = TokenInfo(name, list(scopes), kind)
        return token

    def set_oauth_scopes(self, name: str, scopes: list[str]) -> None:
        """Scopes of OAuth tokens issued to ``name`` from now on."""
        self.state.scopes_for[name] = list(scopes)

    @property
    def target(self) -> str | None:
        return self.state.target

    @target.setter
    def target(self, value: str | None) -> None:
        self.state.target = value

    @property
    def activity(self) -> list[tuple[str, dict[str, Any]]]:
        return self.state.activity

    @property
    def calls(self) -> list[tuple[str, str]]:
        return self.state.calls

    # ----- life cycle
    def _app(self) -> web.Application:
        api = re.escape(self.base_path + "hub/api")
        kw = {"state": self.state}
        return web.Application([
            (api + r"/?", RootHandler, kw),
            (api + r"/user", UserHandler, kw),
            (api + r"/oauth2/authorize", AuthorizeHandler, kw),
            (api + r"/oauth2/token", TokenHandler, kw),
            (api + r"/users/([^/]+)/activity", ActivityHandler, kw),
            (r".*", ProxyHandler, kw),
        ])

    def start(self) -> FakeHub:
        """Start serving in a background thread; returns once the port is bound."""
        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = HTTPServer(self._app())
            self._server.add_sockets(sockets)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(self._server.close_all_connections())
            AsyncHTTPClient().close()
            loop.close()

        self._thread = threading.Thread(target=run, name="fakehub", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake hub did not start")
        return self

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is None or self._thread is None:
            return
        loop, server = self._loop, self._server

        def shutdown() -> None:
            if server is not None:
                server.stop()
            loop.stop()

        loop.call_soon_threadsafe(shutdown)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
