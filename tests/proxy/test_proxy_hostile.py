"""Route confusion (SECURITY.md item 6): hostile paths never reach a server they don't
belong to, never crash the proxy and never produce a traceback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.proxy.conftest import Backend
from tests.proxy.proxy_testlib import ProxyProcess, RawClient, fetch

StartProxy = Callable[..., Awaitable[ProxyProcess]]
StartBackend = Callable[..., Awaitable[Backend]]

# request-target → where it must end: "400", or the name of the backend that may answer
HOSTILE = {
    b"/user/bob/../alice/api": "400",
    b"/user/bob/%2e%2e/alice/api": "400",
    b"/user/bob/%2E%2e/alice/api": "400",
    b"/user/bob/.%2e/alice/api": "400",
    b"/user/bob/%2e./alice/api": "400",
    b"/user/bob;/../alice/api": "400",
    b"/user/bob/./../alice": "400",
    b"/%2e%2e/user/alice/api": "400",
    b"/user/bob\\..\\alice/api": "400",
    b"/user\\alice/api": "400",
    b"/user/alice%": "400",
    b"/user/alice%2": "400",
    b"/user/al%zzice/": "400",
    b"/user/al%00ice/": "400",
    b"/user/bob/x#/../../alice/": "400",
    b"http://proxy.test/user/alice/": "400",
    b"user/alice/": "400",
    b"/user/alice%2F..%2Fbob/api": "hub",  # one segment, not alice
    b"/user/bob%2F..%2Falice/api": "hub",
    b"/user/alice%2f": "hub",
    b"/user/alice%5C": "hub",
    b"//user/alice/api": "hub",
    b"/user//alice/api": "hub",
    b"/user/ALICE/": "hub",
    b"/user/alice./": "hub",
    b"/user/alice~/": "hub",
    b"/user/bob/%2e%2e%2falice": "bob",  # "..%2Falice" is a name inside bob's tree
    b"/user/bob/..%2Falice/api": "bob",
    b"/user/bob/%5c..%5calice/api": "bob",
    b"/user/bob/..;/alice/api": "bob",
    b"/user/bob/%252e%252e/alice": "bob",  # double-encoded: literally "%2e%2e" in bob's tree
}


@pytest.fixture
async def routed(
    start_proxy: StartProxy, start_backend: StartBackend
) -> tuple[ProxyProcess, dict[str, Backend]]:
    backends = {name: await start_backend(name) for name in ("hub", "alice", "bob")}
    proxy = await start_proxy("--default-target", backends["hub"].url)
    await proxy.add_route("/user/alice", backends["alice"].url)
    await proxy.add_route("/user/bob", backends["bob"].url)
    return proxy, backends


async def test_hostile_paths(routed: tuple[ProxyProcess, dict[str, Backend]]) -> None:
    proxy, backends = routed
    for target, expected in HOSTILE.items():
        client = await RawClient.connect(proxy.port)
        client.send(b"GET %s HTTP/1.1\r\nHost: proxy.test\r\n\r\n" % target)
        response = await client.read_response()
        await client.close()
        if expected == "400":
            assert response.status == 400, target
            assert b"Traceback" not in response.body
        else:
            assert response.status == 200, target
            assert response.json()["backend"] == expected, target
            assert response.json()["uri"] == target.decode(), "forwarded unchanged"
    assert backends["alice"].seen == []
    # and the proxy is still fine
    assert (await fetch(proxy.port, "GET", "/user/alice/ok")).json()["backend"] == "alice"


async def test_equivalent_spellings_route_alike(
    routed: tuple[ProxyProcess, dict[str, Backend]],
) -> None:
    proxy, backends = routed
    for target in ("/user/%61lice/x", "/%75ser/alice/x", "/user/alic%65"):
        response = await fetch(proxy.port, "GET", target)
        assert response.json()["backend"] == "alice", target
        assert response.json()["uri"] == target
    assert len(backends["alice"].seen) == 3


async def test_hostile_route_keys_are_refused(
    routed: tuple[ProxyProcess, dict[str, Backend]],
) -> None:
    proxy, _ = routed
    for key in ("/user/x/../alice", "/user/%2e%2e/alice", "/user/a%zz"):
        response = await proxy.api("POST", f"/api/routes{key}", {"target": "http://127.0.0.1:1"})
        assert response.status == 400, key
        assert response.json()["status"] == 400
    assert sorted((await proxy.api("GET", "/api/routes")).json()) == [
        "/", "/user/alice", "/user/bob"
    ]
