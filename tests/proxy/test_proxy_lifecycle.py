"""Start-up, restart with the routes file, graceful stop, TLS, and the library entry."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import trustme
from websockets.asyncio.client import connect

from proxy import ProxyConfig, ProxyServer
from tests.proxy.conftest import TOKEN, Backend
from tests.proxy.proxy_testlib import ProxyProcess, RawClient, fetch, wait_until

StartProxy = Callable[..., Awaitable[ProxyProcess]]
StartBackend = Callable[..., Awaitable[Backend]]

LINE = re.compile(
    r"^himalia-proxy: listening on http://127\.0\.0\.1:(\d+), api on http://127\.0\.0\.1:(\d+)$"
)


async def test_listening_line_names_the_bound_ports(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    lines = [line for line in proxy.lines if line.startswith("himalia-proxy: listening")]
    assert len(lines) == 1
    match = LINE.match(lines[0])
    assert match is not None, lines[0]
    assert int(match.group(1)) == proxy.port != 0
    assert int(match.group(2)) == proxy.api_port != 0


async def test_refuses_to_start_without_a_token(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(token=None, ready=False)
    assert await proxy.wait() == 2
    assert "CONFIGPROXY_AUTH_TOKEN" in proxy.output
    assert "listening" not in proxy.output
    exposed = await start_proxy("--no-auth", "--api-ip", "0.0.0.0", token=None, ready=False)
    assert await exposed.wait() == 2
    assert "loopback" in exposed.output


async def test_no_auth_on_loopback_runs_open(start_proxy: StartProxy) -> None:
    proxy = await start_proxy("--no-auth", token=None)
    assert (await proxy.api("GET", "/api/routes", token="")).status == 200


async def test_api_auth_and_token_hygiene(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    for token in ("", "wrong-token-value"):
        for method, path in (("GET", "/api/routes"), ("POST", "/api/routes/x"),
                             ("DELETE", "/api/routes/x"), ("GET", "/api/routes/x")):
            response = await proxy.api(method, path, {"target": "http://h"}, token=token)
            assert response.status == 403
            assert response.json()["status"] == 403
    assert (await proxy.api("GET", "/api/routes")).json() == {}
    cmdline = Path(f"/proc/{proxy.pid}/cmdline").read_bytes()
    assert TOKEN.encode() not in cmdline
    await proxy.stop()
    assert TOKEN not in proxy.output and "wrong-token-value" not in proxy.output


async def test_routes_survive_kill_9(
    start_proxy: StartProxy, start_backend: StartBackend, tmp_path: Path
) -> None:
    alice, bob = await start_backend("alice"), await start_backend("bob")
    routes = str(tmp_path / "routes.jsonl")
    first = await start_proxy("--routes-file", routes)
    await first.add_route("/user/alice", alice.url, user="alice", server_name="")
    await first.add_route("/user/bob/", bob.url, user="bob", jupyterhub=True)
    await first.add_route("/user/carol", alice.url)
    assert (await first.api("DELETE", "/api/routes/user/carol")).status == 204
    first.signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL

    second = await start_proxy("--routes-file", routes)
    table = (await second.api("GET", "/api/routes")).json()
    assert sorted(table) == ["/user/alice", "/user/bob"]
    assert table["/user/alice"]["user"] == "alice"
    assert table["/user/bob"]["jupyterhub"] is True
    response = await fetch(second.port, "GET", "/user/bob/tree")
    assert response.json()["backend"] == "bob"
    assert (await fetch(second.port, "GET", "/user/carol/")).status == 404


async def test_unusable_routes_file_fails_cleanly(start_proxy: StartProxy, tmp_path: Path) -> None:
    proxy = await start_proxy("--routes-file", str(tmp_path / "missing" / "r.jsonl"), ready=False)
    assert await proxy.wait() == 1
    assert "Cannot start" in proxy.output


async def test_sigterm_finishes_requests_in_flight(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/", backend.url)
    idle = await RawClient.connect(proxy.port)
    assert (await idle.request("GET", "/warm")).status == 200
    busy = await RawClient.connect(proxy.port)
    busy.send(b"GET /x/slow?delay=1.0 HTTP/1.1\r\nHost: h\r\n\r\n")
    await wait_until(lambda: "/x/slow?delay=1.0" in backend.seen)
    proxy.signal(signal.SIGTERM)
    assert await idle.closed_by_peer(2)  # idle keep-alive connections go at once
    response = await busy.read_response()
    assert response.status == 200 and response.body == b"slow done"
    assert response.header("Connection") == "close"
    assert await proxy.wait() == 0
    await idle.close()
    await busy.close()
    assert "Stopped" in proxy.output


def _tls_files(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(key_path)
    cert.cert_chain_pems[0].write_to_path(cert_path)
    with cert_path.open("ab") as chain:
        for pem in cert.cert_chain_pems[1:]:
            chain.write(pem.bytes())
    return ca, key_path, cert_path


async def test_tls_termination(
    start_proxy: StartProxy, start_backend: StartBackend, tmp_path: Path
) -> None:
    backend = await start_backend("alice")
    ca, key, cert = _tls_files(tmp_path)
    proxy = await start_proxy("--ssl-key", str(key), "--ssl-cert", str(cert))
    assert proxy.scheme == "https"
    await proxy.add_route("/user/alice", backend.url)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client = await RawClient.connect(proxy.port, tls=context)
    for _ in range(3):  # keep-alive over TLS
        response = await client.request("GET", "/user/alice/x")
        assert response.json()["headers"]["X-Forwarded-Proto"] == "https"
        assert response.json()["headers"]["X-Forwarded-Port"] == "443"
    await client.close()
    async with connect(f"wss://localhost:{proxy.port}/user/alice/ws", ssl=context) as ws:
        await ws.send("over tls")
        assert await ws.recv() == "over tls"
    plain = await RawClient.connect(proxy.port)
    plain.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert await plain.closed_by_peer()  # no cleartext on the TLS port
    await plain.close()


async def test_library_entry_on_the_stdlib_loop(start_backend: StartBackend,
                                                tmp_path: Path) -> None:
    """ProxyServer runs in-process on whatever loop is running (here: plain asyncio)."""
    backend = await start_backend("alice")
    config = ProxyConfig(ip="127.0.0.1", port=0, api_port=0, auth_token="lib-token",
                         default_target=backend.url, routes_file=str(tmp_path / "r.jsonl"))
    server = ProxyServer(config)
    await server.start()
    try:
        port = int(server.public_url.rsplit(":", 1)[1])
        response = await fetch(port, "GET", "/hub/")
        assert response.json()["backend"] == "alice"
        assert server.listening_line.startswith("himalia-proxy: listening on http://127.0.0.1:")
        client = await RawClient.connect(port)
        await client.request("GET", "/keep")
        await server.stop(grace=1)
        assert await client.closed_by_peer()
        await client.close()
    finally:
        await server.stop(grace=0)
    await asyncio.sleep(0)
    assert '"/"' in (tmp_path / "r.jsonl").read_text()
