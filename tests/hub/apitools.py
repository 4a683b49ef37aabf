"""Small helpers shared by the REST API tests (groups, services, proxy, RBAC, misc)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests

from tests.hub import mockserver
from tests.hubproc import HubProcess


def err(r: requests.Response, status: int) -> str:
    """Assert ``r`` is the one JSON error shape with ``status``; returns the message."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"status", "message"}, body
    assert body["status"] == status and isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in r.text
    return str(body["message"])


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def toml_value(value: Any) -> str:
    """A TOML literal for strings, numbers, booleans, lists and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write_config(path: Path, mock_mode: str | None = "normal", **settings: Any) -> Path:
    """A TOML config file: ``settings`` (lists of dicts become ``[[arrays of tables]]``),
    plus a fast fake single-user server unless ``mock_mode`` is None."""
    lines: list[str] = []
    tables: list[str] = []
    if mock_mode is not None:
        cmd, args = mockserver.command(mock_mode, 0.5)
        settings = {"singleuser_cmd": cmd, "singleuser_args": args, **settings}
    for key, value in settings.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for entry in value:
                tables.append(f"[[{key}]]")
                tables.extend(f"{k} = {toml_value(v)}" for k, v in entry.items())
                tables.append("")
        else:
            lines.append(f"{key} = {toml_value(value)}")
    path.write_text("\n".join(lines) + "\n\n" + "\n".join(tables))
    return path


def config_hub(make_hub: Any, tmp_path: Path, **settings: Any) -> HubProcess:
    """A hub of this test's own, started with a config file of ``settings``."""
    path = write_config(tmp_path / f"{unique('cfg')}.toml", **settings)
    hub: HubProcess = make_hub(extra_args=["--config", str(path)])
    return hub


def grant_role(hub: HubProcess, role: str, scopes: list[str], *, users: tuple[str, ...] = (),
               groups: tuple[str, ...] = ()) -> None:
    """Create a role with the CLI (if missing) and grant it."""
    done = hub.cli("roles", "add", role, "--scopes", ",".join(scopes))
    assert done.returncode == 0 or "already exists" in done.stderr, done.stderr
    args = [a for u in users for a in ("--user", u)] + [a for g in groups for a in ("--group", g)]
    done = hub.cli("roles", "grant", role, *args)
    assert done.returncode == 0, done.stderr


def user_token(hub: HubProcess, name: str, *scopes: str) -> str:
    return hub.make_token(name, *scopes)
