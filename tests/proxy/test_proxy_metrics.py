"""``GET /metrics`` on the proxy's API port: token, values after real traffic, the switches."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.proxy.conftest import Backend
from tests.proxy.proxy_testlib import ProxyProcess, fetch

StartProxy = Callable[..., Awaitable[ProxyProcess]]
StartBackend = Callable[..., Awaitable[Backend]]


async def _metrics(proxy: ProxyProcess) -> dict[tuple[str, str], float]:
    response = await proxy.api("GET", "/metrics")
    assert response.status == 200, response
    assert (response.header("Content-Type") or "").startswith("text/plain")
    return {(s.name, s.labels.get("code", "")): s.value
            for family in text_string_to_metric_families(response.body.decode())
            for s in family.samples}


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_metrics_count_requests_errors_connections_and_tunnels(
        start_proxy: StartProxy, start_backend: StartBackend) -> None:
    backend = await start_backend("alice")
    proxy = await start_proxy()
    assert (await proxy.api("GET", "/metrics", token="")).status == 403
    assert (await proxy.api("GET", "/metrics", token="wrong")).status == 403
    await proxy.add_route("/user/alice", backend.url)
    await proxy.add_route("/user/gone", f"http://127.0.0.1:{_dead_port()}")
    for _ in range(3):
        assert (await fetch(proxy.port, "GET", "/user/alice/x")).status == 200
    assert (await fetch(proxy.port, "GET", "/nowhere")).status == 404
    assert (await fetch(proxy.port, "GET", "/user/gone/x")).status == 503
    url = f"ws://127.0.0.1:{proxy.port}/user/alice/api/kernels/k1/ws"
    async with connect(url) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        values = await _metrics(proxy)
        assert values[("himalia_proxy_websocket_tunnels", "")] == 1
        assert values[("himalia_proxy_websocket_tunnels_opened_total", "")] == 1
        assert values[("himalia_proxy_active_connections", "")] >= 1
    assert values[("himalia_proxy_requests_total", "2xx")] == 3
    assert values[("himalia_proxy_requests_total", "4xx")] == 1
    assert values[("himalia_proxy_requests_total", "5xx")] == 1
    assert values[("himalia_proxy_requests_total", "1xx")] == 1  # the handshake
    assert values[("himalia_proxy_upstream_errors_total", "")] == 1
    assert values[("himalia_proxy_routes", "")] == 2
    for _ in range(100):  # the tunnel closes once both sides have seen the close
        if (await _metrics(proxy))[("himalia_proxy_websocket_tunnels", "")] == 0:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the tunnel is still counted as open")


async def test_metrics_without_the_token_when_asked(start_proxy: StartProxy) -> None:
    proxy = await start_proxy("--metrics-no-auth")
    response = await proxy.api("GET", "/metrics", token="")
    assert response.status == 200 and b"himalia_proxy_requests_total" in response.body
    assert (await proxy.api("GET", "/api/routes", token="")).status == 403


async def test_no_metrics_switch(start_proxy: StartProxy) -> None:
    proxy = await start_proxy("--no-metrics")
    assert (await proxy.api("GET", "/metrics")).status == 404
