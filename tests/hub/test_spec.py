"""``docs/rest-api.yml`` is a valid OpenAPI 3.1 document that matches the code exactly.

Every API route of :func:`hub.app.collect_routes` (regex groups read as ``{param}``) must be a
path of the spec with exactly the HTTP methods its handler implements, and every path and
method of the spec must exist in the code. Public handlers are public in the spec, the others
name real scopes. The hub serves the same file at ``/hub/api/spec``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml  # type: ignore[import-untyped, unused-ignore]  # no stubs; mypy#20105
from openapi_spec_validator import validate
from tornado.web import RequestHandler

from hub import API_VERSION, config
from hub.app import route_table
from hub.handlers.base import BaseHandler
from hub.paths import api_spec_file
from hub.services import scopes as sc
from tests.hubproc import HubProcess

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "rest-api.yml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
API_PREFIX = "/hub/api"

Routes = dict[str, tuple[set[str], type[BaseHandler]]]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def code_routes(tmp_path_factory: pytest.TempPathFactory) -> Routes:
    """API routes of the code: template with ``{}`` for each parameter → (methods, handler)."""
    tmp = tmp_path_factory.mktemp("spec-routes")
    cfg = config.load(environ={}).replace(data_dir=str(tmp), create_first_admin=False,
                                          base_url="/")
    out: Routes = {}
    for pattern, handler in route_table(cfg):
        template = _template(pattern)
        if template is None:
            continue
        methods = {m for m in METHODS if _implemented(handler, m)}
        assert template not in out, f"two API routes for {template}"
        assert issubclass(handler, BaseHandler), pattern
        out[template] = (methods, handler)
    return out


def _template(pattern: str) -> str | None:
    """``/hub/api/users/([^/]+)/server`` → ``/users/{}/server``; None outside the API."""
    path = re.sub(r"\((?:[^()]|\([^()]*\))*\)\??", "{}", pattern)  # each group, one level deep
    path = re.sub(r"\\(.)", r"\1", path)  # re.escape()'d characters
    path = path.replace("/?", "/").rstrip("$")
    if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
        return None
    return path[len(API_PREFIX):] or "/"


def _normalize(spec_path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", spec_path)


def _implemented(handler: type, method: str) -> bool:
    # Unwrapped: APIHandler wraps every method (Tornado's own too) in its body guard.
    return inspect.unwrap(getattr(handler, method)) is not getattr(RequestHandler, method)


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Normalized spec path → {method: operation}."""
    out: dict[str, dict[str, Any]] = {}
    for path, item in spec["paths"].items():
        key = _normalize(path)
        assert key not in out, f"two spec paths for {key}"
        out[key] = {m: op for m, op in item.items() if m in METHODS}
    return out


def test_spec_is_valid_openapi_31(spec: dict[str, Any]) -> None:
    validate(spec)  # raises with the offending location
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["version"] == API_VERSION
    assert spec["servers"] == [{"url": API_PREFIX}]
    token = spec["components"]["securitySchemes"]["token"]
    assert token == {**token, "type": "apiKey", "in": "header", "name": "Authorization"}


def test_every_code_route_is_in_the_spec(spec: dict[str, Any], code_routes: Routes) -> None:
    ops = _operations(spec)
    missing = sorted(t for t in code_routes if t not in ops)
    assert not missing, f"API routes missing from docs/rest-api.yml: {missing}"
    for template, (methods, handler) in code_routes.items():
        documented = set(ops[template])
        assert documented == methods, (
            f"{template}: {handler.__name__} implements {sorted(methods)}, "
            f"the spec lists {sorted(documented)}")


def test_every_spec_path_is_in_the_code(spec: dict[str, Any], code_routes: Routes) -> None:
    extra = sorted(p for p in spec["paths"] if _normalize(p) not in code_routes)
    assert not extra, f"paths in docs/rest-api.yml that the hub does not serve: {extra}"


def test_security_matches_the_handlers(spec: dict[str, Any], code_routes: Routes) -> None:
    """Public handlers are ``security: []``; the others name known scopes (or none)."""
    ops = _operations(spec)
    for template, (_, handler) in code_routes.items():
        for method, op in ops[template].items():
            where = f"{method.upper()} {template}"
            security = op.get("security", spec["security"])
            if handler.public:
                assert security == [], f"{where} is public in the code"
                continue
            assert security, f"{where} needs authentication in the code"
            for requirement in security:
                for scheme, scopes in requirement.items():
                    assert scheme in ("token", "cookie"), where
                    for scope in scopes:
                        sc.validate(scope)  # a real scope name, not a typo


def test_operation_ids_are_unique(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for item in _operations(spec).values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_errors_use_the_one_error_shape(spec: dict[str, Any]) -> None:
    """Every documented JSON error (4xx/5xx) is the ``Error`` schema, OAuth's token aside."""
    error = "#/components/schemas/Error"
    responses = spec["components"]["responses"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in METHODS or path.startswith("/oauth2/"):
                continue
            for status, response in op["responses"].items():
                if int(status) < 400:
                    continue
                if "$ref" in response:
                    response = responses[response["$ref"].rsplit("/", 1)[1]]
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": error}, (method, path, status)


def test_installed_spec_is_this_file() -> None:
    assert api_spec_file().read_bytes() == SPEC_PATH.read_bytes()


def test_hub_serves_the_spec(hub: HubProcess) -> None:
    r = requests.get(hub.hub_api + "/spec", timeout=10)  # public: no token
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/yaml")
    assert r.content == SPEC_PATH.read_bytes()
