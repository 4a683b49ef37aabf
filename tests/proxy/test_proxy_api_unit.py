"""The REST API's handlers, called without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.api import ApiApp, ApiRequest, ApiResponse
from proxy.store import RouteStore

TOKEN = b"s3cret"


def _call(app: ApiApp, method: str, path: str, body: Any = None, *,
          auth: bytes | None = b"token " + TOKEN, query: str = "") -> ApiResponse:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return app.handle(ApiRequest(method, path, query, auth, raw))


@pytest.fixture
def app() -> ApiApp:
    return ApiApp(RouteStore(), TOKEN.decode())


def _error(response: ApiResponse, status: int) -> None:
    assert response.status == status
    assert json.loads(response.body) == {"status": status, "message": json.loads(
        response.body)["message"]}
    assert json.loads(response.body)["message"]


def test_every_endpoint_requires_the_token(app: ApiApp) -> None:
    paths = ["/api/routes", "/api/routes/user/a", "/api/nothing", "/", "/api/routes/"]
    methods = {m for _, handlers in app.routes for m in handlers} | {"PUT", "PATCH"}
    for path in paths:
        for method in sorted(methods):
            for auth in (None, b"token wrong", b"bearer " + TOKEN, b"token", TOKEN):
                _error(_call(app, method, path, {"target": "http://h"}, auth=auth), 403)
    assert len(app.store) == 0


def test_token_scheme_is_case_insensitive(app: ApiApp) -> None:
    assert _call(app, "GET", "/api/routes", auth=b"Token " + TOKEN).status == 200


def test_crud(app: ApiApp) -> None:
    assert _call(app, "POST", "/api/routes/user/alice",
                 {"target": "http://127.0.0.1:5000", "user": "alice"}).status == 201
    listing = json.loads(_call(app, "GET", "/api/routes").body)
    assert list(listing) == ["/user/alice"]
    assert listing["/user/alice"]["user"] == "alice"
    assert listing["/user/alice"]["target"] == "http://127.0.0.1:5000"
    assert listing["/user/alice"]["last_activity"].endswith("Z")
    one = json.loads(_call(app, "GET", "/api/routes/user/alice/").body)
    assert one == listing["/user/alice"]
    assert _call(app, "DELETE", "/api/routes/user/alice/").status == 204
    _error(_call(app, "DELETE", "/api/routes/user/alice"), 404)
    _error(_call(app, "GET", "/api/routes/user/alice"), 404)


def test_default_route(app: ApiApp) -> None:
    assert _call(app, "POST", "/api/routes", {"target": "http://127.0.0.1:8081"}).status == 201
    assert "/" in json.loads(_call(app, "GET", "/api/routes").body)
    assert _call(app, "DELETE", "/api/routes/").status == 204


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", b"[1, 2]", {"target": 5}, {}, {"target": "gopher://x"}, b""],
)
def test_bad_bodies(app: ApiApp, body: Any) -> None:
    _error(_call(app, "POST", "/api/routes/user/a", body), 400)
    assert len(app.store) == 0


def test_bad_keys(app: ApiApp) -> None:
    _error(_call(app, "POST", "/api/routes/user/../x", {"target": "http://h"}), 400)
    _error(_call(app, "GET", "/api/routes/a%"), 404)


def test_inactive_since(app: ApiApp) -> None:
    _call(app, "POST", "/api/routes/user/a", {"target": "http://h:1"})
    old = _call(app, "GET", "/api/routes", query="inactive_since=2000-01-01T00:00:00Z")
    assert json.loads(old.body) == {}
    future = _call(app, "GET", "/api/routes", query="inactive_since=2999-01-01T00:00:00.000Z")
    assert list(json.loads(future.body)) == ["/user/a"]
    camel = _call(app, "GET", "/api/routes", query="inactiveSince=2999-01-01T00:00:00Z")
    assert list(json.loads(camel.body)) == ["/user/a"]
    _error(_call(app, "GET", "/api/routes", query="inactive_since=last+week"), 400)


def test_unknown_paths_and_methods(app: ApiApp) -> None:
    _error(_call(app, "GET", "/api/other"), 404)
    _error(_call(app, "PUT", "/api/routes/x", {"target": "http://h"}), 405)


def test_open_api_only_when_configured() -> None:
    app = ApiApp(RouteStore(), None)
    assert _call(app, "GET", "/api/routes", auth=None).status == 200
