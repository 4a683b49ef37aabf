"""Walk the hub's whole route table: every handler is authenticated unless marked public,
and every API route answers errors in the one JSON shape."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from hub import config
from hub.api.base import APIHandler
from hub.app import StaticHandler, route_table
from hub.handlers.base import BaseHandler
from tests.hubproc import HubProcess

METHODS = ("get", "post", "put", "patch", "delete")


def _routes(tmp: Path) -> list[tuple[str, Any]]:
    cfg = config.load(environ={}).replace(data_dir=str(tmp), create_first_admin=False,
                                          base_url="/my%20hub@x/")
    return route_table(cfg)


def _example_path(pattern: str) -> str:
    path = re.sub(r"\([^)]*\)\??", "x", pattern)
    path = path.replace("\\", "").replace("/?", "/").rstrip("$")
    return path


def _implemented(handler: type, method: str) -> bool:
    from tornado.web import RequestHandler

    # API methods are wrapped (the body guard): compare what they wrap.
    return inspect.unwrap(getattr(handler, method)) is not getattr(RequestHandler, method)


def test_every_route_is_a_hub_handler(tmp_path: Path) -> None:
    for pattern, handler in _routes(tmp_path):
        assert issubclass(handler, (BaseHandler, StaticHandler)), pattern


def test_non_public_routes_require_login(tmp_path: Path, hub: HubProcess) -> None:
    origin = hub.url[: -len(hub.base_path)]
    checked = 0
    for pattern, handler in _routes(tmp_path):
        if handler is StaticHandler or handler.public:
            continue
        path = _example_path(pattern)
        for method in METHODS:
            if not _implemented(handler, method):
                continue
            r = requests.request(method.upper(), origin + path, allow_redirects=False,
                                 timeout=10, json={} if method != "get" else None,
                                 headers={"Accept": "text/html"})
            checked += 1
            if issubclass(handler, APIHandler):
                assert r.status_code == 403, (method, path, r.status_code)
                assert r.json()["status"] == 403
            else:
                assert r.status_code in (302, 403), (method, path, r.status_code)
                if r.status_code == 302:
                    assert "/hub/login" in r.headers["Location"]
    assert checked > 15


@pytest.mark.parametrize("method", METHODS)
def test_api_errors_have_one_shape(tmp_path: Path, hub: HubProcess, method: str) -> None:
    """With a valid token but junk input, every API route fails cleanly in JSON."""
    origin = hub.url[: -len(hub.base_path)]
    for pattern, handler in _routes(tmp_path):
        if not issubclass(handler, APIHandler) or not _implemented(handler, method):
            continue
        path = _example_path(pattern)
        r = requests.request(method.upper(), origin + path, data=b"\xff{]", timeout=30,
                             headers={"Authorization": f"token {hub.admin_token}",
                                      "Content-Type": "application/json"})
        if r.status_code < 400:
            continue
        assert r.status_code < 500, (method, path, r.status_code, r.text[:200])
        body = r.json()
        if path.endswith("oauth2/token"):
            assert "error" in body  # OAuth's own error format (RFC 6749)
            continue
        assert set(body) == {"status", "message"}, (method, path, body)
        assert body["status"] == r.status_code
