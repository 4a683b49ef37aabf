"""Bad input found by trying the API as an attacker would: each gets a clear 4xx, never a 500."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.hubproc import HubProcess


def _error(r: object, status: int) -> str:
    import requests

    assert isinstance(r, requests.Response)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and isinstance(body["message"], str)
    return str(body["message"])


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000,
                                  '{"a":' * 50_000 + "1" + "}" * 50_000],
                         ids=["arrays", "objects"])
def test_deeply_nested_json_is_a_400(hub: HubProcess, body: str) -> None:
    r = hub.api("POST", "/users", data=body, headers={"Content-Type": "application/json"})
    assert "nested too deeply" in _error(r, 400)


@pytest.mark.parametrize("name", [".", "..", "...", "....."])
def test_names_made_of_dots_are_refused(hub: HubProcess, name: str) -> None:
    # Sent in a JSON body: a path segment of dots would be folded by the client itself.
    r = hub.api("POST", "/users", json={"usernames": [name]})
    assert "dots" in _error(r, 400)
    listed = hub.api("GET", "/users", params={"name_filter": "."}).json()
    assert [u["name"] for u in listed if not u["name"].strip(".")] == []


def _declare_big_body(url: str, path: str, size: int,
                      headers: str = "") -> tuple[bytes, float]:
    """Send headers declaring a ``size`` body (and no body); the answer and how long it took."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        began = time.monotonic()
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {size}\r\n{headers}\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - began


def test_unauthenticated_big_body_is_refused_before_it_is_read(hub: HubProcess) -> None:
    """A caller without credentials gets its 403 at once: nothing of a big body is read (a
    known caller's oversized body is drained so that it can read its 413)."""
    path = urlsplit(hub.hub_api).path + "/users"
    answer, took = _declare_big_body(hub.hub_url, path, 2 << 20)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert took < 5  # the hub did not wait for 64 MiB that never came
    # The same from a known caller: a 413 (its body would be drained, so it can read it).
    answer, _ = _declare_big_body(hub.hub_url, path, (64 << 20) + 1,
                                  f"Authorization: token {hub.admin_token}\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
