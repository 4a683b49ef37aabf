"""The REST API, in configurable-http-proxy's dialect (CONTRACTS.md §4).

========================================  ==================================================
``GET /api/routes[?inactive_since=ISO]``  ``{key: {"target", "last_activity", ...data}}``;
                                          a bad timestamp → 400
``GET /api/routes/<path>``                one route, or 404
``POST /api/routes/<path>``               body ``{"target": url, ...}`` → 201 (replaces)
``DELETE /api/routes/<path>``             204, or 404 if there is no such route
``GET /metrics``                          Prometheus metrics (:mod:`proxy.metrics`); without
                                          the token too with ``--metrics-no-auth``
========================================  ==================================================

Every request must carry ``Authorization: token <CONFIGPROXY_AUTH_TOKEN>`` — checked before
anything else, so even unknown paths answer 403 to strangers. Only a proxy started with
``--no-auth`` and no token (loopback API only) skips the check. Errors are JSON
``{"status": N, "message": "..."}``. ``<path>`` may be given with or without a trailing
slash; ``POST /api/routes`` sets the default route ``/``. ``inactiveSince`` is accepted too.

The server is a small httptools protocol: bodies over 1 MiB get 413, heads over 64 KiB 431.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qs

import httptools

from .headers import status_line
from .logs import access_log
from .metrics import CONTENT_TYPE
from .store import RouteStore, parse_iso

__all__ = ["ApiApp", "ApiConnection", "ApiRequest", "ApiResponse", "HTTPError"]

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_HEAD = 64 * 1024


@dataclass(slots=True)
class ApiRequest:
    """A complete API request."""

    method: str
    path: str
    query: str
    authorization: bytes | None
    body: bytes


@dataclass(slots=True)
class ApiResponse:
    """An API answer; ``body`` is JSON (or empty)."""

    status: int
    body: bytes = b""
    content_type: bytes = b"application/json"


class HTTPError(Exception):
    """An API error: ``status`` and ``message`` go to the client as JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(status: int, payload: Any) -> ApiResponse:
    return ApiResponse(status, json.dumps(payload).encode())


def error_response(status: int, message: str) -> ApiResponse:
    """The one error shape of the API."""
    return json_response(status, {"status": status, "message": message})


class ApiApp:
    """Authenticates and dispatches API requests to the route store.

    ``routes`` lists every endpoint as ``(pattern, {method: handler})``; a handler gets the
    request and the pattern's first group.
    """

    def __init__(self, store: RouteStore, token: str | None,
                 metrics: Callable[[], bytes] | None = None, metrics_public: bool = False
                 ) -> None:
        self.store = store
        self._token = token.encode() if token else None
        self._metrics = metrics
        self._metrics_public = metrics_public and metrics is not None
        Handler = Callable[[ApiRequest, str], ApiResponse]
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (
                re.compile(r"^/api/routes(/.*)?$"),
                {"GET": self.get_routes, "POST": self.post_route, "DELETE": self.delete_route},
            ),
        ]
        if metrics is not None:
            self.routes.append((re.compile(r"^/metrics()$"), {"GET": self.get_metrics}))

    def handle(self, request: ApiRequest) -> ApiResponse:
        try:
            if not (self._metrics_public and request.path == "/metrics"):
                self._authenticate(request)
            for pattern, methods in self.routes:
                match = pattern.match(request.path)
                if match is None:
                    continue
                handler = methods.get(request.method)
                if handler is None:
                    raise HTTPError(405, f"{request.method} not allowed here")
                return handler(request, match.group(1) or "")
            raise HTTPError(404, "Not found")
        except HTTPError as exc:
            return error_response(exc.status, exc.message)

    def _authenticate(self, request: ApiRequest) -> None:
        if self._token is None:
            return
        scheme, _, token = (request.authorization or b"").strip().partition(b" ")
        if scheme.lower() != b"token" or not hmac.compare_digest(token.strip(), self._token):
            raise HTTPError(403, "Missing or invalid proxy API token")

    # -- handlers

    def get_routes(self, request: ApiRequest, key: str) -> ApiResponse:
        if key not in ("", "/"):
            route = self._get(key)
            if route is None:
                raise HTTPError(404, "No such route")
            return json_response(200, self.store.model(route))
        return json_response(200, self.store.models(self._inactive_since(request.query)))

    def get_metrics(self, request: ApiRequest, key: str) -> ApiResponse:
        assert self._metrics is not None
        return ApiResponse(200, self._metrics(), CONTENT_TYPE)

    def post_route(self, request: ApiRequest, key: str) -> ApiResponse:
        data = self._json_object(request.body)
        if not isinstance(data.get("target"), str):
            raise HTTPError(400, "Must specify 'target' as string")
        try:
            self.store.add(key or "/", data)
        except ValueError as exc:
            raise HTTPError(400, f"Invalid route: {exc}") from None
        except OSError as exc:
            log.error("Cannot write the routes file: %s", exc)
            raise HTTPError(500, "Could not persist the route") from None
        return ApiResponse(201)

    def delete_route(self, request: ApiRequest, key: str) -> ApiResponse:
        try:
            removed = self.store.remove(key or "/")
        except ValueError:
            removed = False
        except OSError as exc:
            log.error("Cannot write the routes file: %s", exc)
            raise HTTPError(500, "Could not persist the change") from None
        if not removed:
            raise HTTPError(404, "No such route")
        return ApiResponse(204)

    # -- helpers

    def _get(self, key: str) -> Any:
        try:
            return self.store.get(key)
        except ValueError:
            return None

    @staticmethod
    def _inactive_since(query: str) -> datetime | None:
        params = parse_qs(query, keep_blank_values=True)
        values = params.get("inactive_since") or params.get("inactiveSince")
        if not values:
            return None
        try:
            return parse_iso(values[0])
        except ValueError:
            raise HTTPError(400, f"Invalid datestamp {values[0]!r}: must be ISO8601") from None

    @staticmethod
    def _json_object(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else None
        except (UnicodeDecodeError, ValueError):
            raise HTTPError(400, "Body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "Body must be a JSON object")
        return data


class ApiConnection(asyncio.Protocol):
    """One API client socket: parse a request, answer it, repeat (keep-alive)."""

    def __init__(self, app: ApiApp, connections: set[ApiConnection]) -> None:
        self.app = app
        self._connections = connections
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._auth: bytes | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._error = 0
        self._started = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # already answered 400 by on_message_complete
        except httptools.HttpParserError:
            self._send(error_response(400, "Malformed request"), b"?", b"", False)

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url), 431)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value), 431)
        if name.lower() == b"authorization":
            self._auth = value

    def on_body(self, body: bytes) -> None:
        self._count(len(body), 413)
        if not self._error:
            self._body.append(body)

    def _count(self, size: int, status: int) -> None:
        self._size += size
        limit = MAX_BODY + MAX_HEAD if status == 413 else MAX_HEAD
        if self._size > limit and not self._error:
            self._error = status
            self._body.clear()

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        keep_alive = self._parser.should_keep_alive() and not self._error
        if self._parser.should_upgrade():
            response, keep_alive = error_response(400, "Upgrade not supported"), False
        elif self._error == 413:
            response = error_response(413, "Request body too large")
        elif self._error:
            response = error_response(431, "Request head too large")
        else:
            path, _, query = self._url.decode("latin-1").partition("?")
            request = ApiRequest(method.decode(), path, query, self._auth, b"".join(self._body))
            response = self.app.handle(request)
        self._send(response, method, self._url, keep_alive)

    def _send(self, response: ApiResponse, method: bytes, url: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = [status_line(response.status)]
        if response.body:
            head.append(b"Content-Type: %s\r\n" % response.content_type)
        head.append(b"Content-Length: %d\r\n" % len(response.body))
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        self.transport.write(b"".join([*head, b"\r\n", response.body]))
        status = response.status
        level = logging.INFO if status < 400 else logging.WARNING
        ms = (time.monotonic() - self._started) * 1000
        access_log(log, logging.ERROR if status >= 500 else level, status, method, url, ms)
        if not keep_alive:
            self.transport.close()
