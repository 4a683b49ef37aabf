"""HTTP forwarding through a real proxy process to real backends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from tornado import httpserver, netutil, web

from tests.proxy.conftest import Backend
from tests.proxy.proxy_testlib import ProxyProcess, RawClient, fetch, wait_until

StartProxy = Callable[..., Awaitable[ProxyProcess]]
StartBackend = Callable[..., Awaitable[Backend]]


async def test_forwarding_preserves_path_host_and_adds_forwarded_headers(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend("alice")
    proxy = await start_proxy()
    await proxy.add_route("/user/alice", backend.url)
    response = await fetch(
        proxy.port, "GET", "/user/alice/api/contents/a%20b?x=1&y=%2F",
        host="hub.example.org:8443",
        headers=[("X-Forwarded-For", "203.0.113.9"), ("Connection", "X-Private"),
                 ("X-Private", "secret")],
    )
    assert response.status == 200
    seen = response.json()
    assert seen["uri"] == "/user/alice/api/contents/a%20b?x=1&y=%2F"  # forwarded unchanged
    headers = seen["headers"]
    assert headers["Host"] == "hub.example.org:8443"
    assert headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Port"] == "8443"
    assert headers["X-Forwarded-Host"] == "hub.example.org:8443"
    assert "X-Private" not in headers


async def test_longest_prefix_routing_and_default(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    hub, alice, lab = [await start_backend(n) for n in ("hub", "alice", "lab")]
    proxy = await start_proxy("--default-target", hub.url)
    await proxy.add_route("/user/alice", alice.url)
    await proxy.add_route("/user/alice/lab/", lab.url)
    expectations = {
        "/hub/home": "hub",
        "/user/alice": "alice",
        "/user/alice/tree": "alice",
        "/user/alice/lab/x": "lab",
        "/user/alicex/": "hub",
    }
    client = await RawClient.connect(proxy.port)
    for path, name in expectations.items():
        response = await client.request("GET", path)
        assert response.json()["backend"] == name, path
    await client.close()


async def test_keep_alive_reuses_both_connections(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    for i in range(30):
        response = await client.request("GET", f"/r{i}")
        assert response.status == 200 and response.keep_alive
    await client.close()
    assert backend.seen == [f"/r{i}" for i in range(30)]
    assert backend.state.connections == 1


async def test_pipelined_requests_answer_in_order(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    client.send(b"".join(b"GET /p%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(10)))
    for i in range(10):
        response = await client.read_response()
        assert response.json()["uri"] == f"/p{i}"
    await client.close()


async def test_chunked_both_ways(start_proxy: StartProxy, start_backend: StartBackend) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    parts = [b"hello ", b"chunked ", b"world" * 1000]
    body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    client.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    response = await client.read_response()
    assert response.json()["body_len"] == sum(map(len, parts))
    assert response.json()["body_sha"] == hashlib.sha256(b"".join(parts)).hexdigest()
    response = await client.request("GET", "/x/chunked")
    assert response.header("Transfer-Encoding") == "chunked"
    assert response.body == b"part0;part1;part2;part3;part4;"
    await client.close()


async def test_http10_client_gets_close_delimited_body(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    client.send(b"GET /x/chunked HTTP/1.0\r\n\r\n")
    response = await client.read_response()
    assert response.body == b"part0;part1;part2;part3;part4;"
    assert response.header("Transfer-Encoding") is None
    assert await client.closed_by_peer()
    await client.close()


async def test_head_and_204(start_proxy: StartProxy, start_backend: StartBackend) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    response = await client.request("HEAD", "/thing")
    assert response.status == 200 and response.body == b""
    assert response.header("Content-Length") == "1234" and response.header("X-Head") == "yes"
    response = await client.request("GET", "/a/nocontent")
    assert response.status == 204
    # the connection is still in sync after both bodiless answers
    response = await client.request("GET", "/after")
    assert response.json()["uri"] == "/after"
    await client.close()
    assert backend.state.connections == 1


async def test_expect_100_continue(start_proxy: StartProxy, start_backend: StartBackend) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    client.send(b"hello")
    response = await client.read_response()
    assert response.json()["body_len"] == 5
    await client.close()


async def test_sse_arrives_event_by_event(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    client.send(b"GET /hub/api/progress/sse HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert b"text/event-stream" in head
    received = b""
    for i in range(3):
        # the backend sends the next event only after we release it: a proxy that buffered
        # would leave us waiting here
        while f"data: event{i}\n\n".encode() not in received:
            received += await asyncio.wait_for(client.reader.read(4096), 5)
        backend.state.sse_gate.put_nowait(None)
    await client.close()


async def test_no_route_is_404_page(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    response = await fetch(proxy.port, "GET", "/user/nobody/<script>")
    assert response.status == 404
    assert response.header("Content-Type") == "text/html; charset=utf-8"
    assert response.header("Content-Security-Policy") == "frame-ancestors 'none'"
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert b"<script>" not in response.body
    assert b"404" in response.body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_target_is_503(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    await proxy.add_route("/user/gone", f"http://127.0.0.1:{_free_port()}")
    client = await RawClient.connect(proxy.port)
    response = await client.request("GET", "/user/gone/tree")
    assert response.status == 503
    assert response.header("Content-Security-Policy") == "frame-ancestors 'none'"
    response = await client.request("HEAD", "/user/gone/tree")
    assert response.status == 503 and response.body == b""
    await client.close()


async def test_connect_timeout_is_503(start_proxy: StartProxy) -> None:
    # a listener whose accept queue is full: further connection attempts hang
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        try:
            proxy = await start_proxy("--timeout", "300")
            await proxy.add_route("/user/far", f"http://127.0.0.1:{listener.getsockname()[1]}")
            started = asyncio.get_running_loop().time()
            response = await fetch(proxy.port, "GET", "/user/far/")
            assert response.status == 503
            # not a speed budget: well under the 10 s default, so --timeout was applied
            assert asyncio.get_running_loop().time() - started < 8
        finally:
            for filler in fillers:
                filler.close()


async def test_upgrade_header_without_connection_upgrade_is_plain_http(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    proxy = await start_proxy("--default-target", backend.url)
    client = await RawClient.connect(proxy.port)
    response = await client.request("GET", "/x", headers=[("Upgrade", "websocket")])
    assert response.status == 200
    assert "Upgrade" not in response.json()["headers"]
    assert (await client.request("GET", "/again")).status == 200  # still plain HTTP
    await client.close()


class _ErrorPage(web.RequestHandler):
    def get(self, code: str) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(f"<p>custom {code} for {self.get_argument('url')}</p>")


async def test_error_target_renders_404_and_503(start_proxy: StartProxy) -> None:
    app = web.Application([(r"/hub/error/(\d+)", _ErrorPage)])
    server = httpserver.HTTPServer(app)
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    try:
        proxy = await start_proxy("--error-target", f"http://127.0.0.1:{port}/hub/error")
        response = await fetch(proxy.port, "GET", "/user/nobody/x?a=1")
        assert response.status == 404
        assert response.body == b"<p>custom 404 for /user/nobody/x?a=1</p>"
        assert response.header("Content-Security-Policy") == "frame-ancestors 'none'"
        await proxy.add_route("/user/gone", f"http://127.0.0.1:{_free_port()}")
        response = await fetch(proxy.port, "GET", "/user/gone/")
        assert response.status == 503
        assert response.body == b"<p>custom 503 for /user/gone/</p>"
    finally:
        server.stop()
        await server.close_all_connections()


async def test_dead_error_target_falls_back_to_builtin_page(start_proxy: StartProxy) -> None:
    proxy = await start_proxy("--error-target", f"http://127.0.0.1:{_free_port()}/hub/error")
    response = await fetch(proxy.port, "GET", "/nowhere")
    assert response.status == 404 and b"404 Not Found" in response.body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /probe HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /probe HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /probe HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         400),
        (b"POST /probe HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n", 400),
        (b"CONNECT probe:443 HTTP/1.1\r\nHost: probe:443\r\n\r\n", 400),
        (b"GET /probe HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
         400),
        (b"GET /probe HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /probe" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 431),
        (b"GET /probe HTTP/1.1\r\nHost: h\r\n" + b"X-Many: 1\r\n" * 300 + b"\r\n", 431),
        (b"POST /probe HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
         b"0\r\n\r\n", 501),
    ],
)
async def test_malformed_requests(
    start_proxy: StartProxy, start_backend: StartBackend, raw: bytes, status: int
) -> None:
    backend = await start_backend()
    proxy = await start_proxy("--default-target", backend.url)
    client = await RawClient.connect(proxy.port)
    client.send(raw)
    response = await client.read_response()
    assert response.status == status
    assert await client.closed_by_peer()
    await client.close()
    assert not [uri for uri in backend.seen if "probe" in uri]


async def test_endless_header_is_cut_off(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    client = await RawClient.connect(proxy.port)
    client.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Endless: ")
    try:
        for _ in range(200):  # 1.6 MB of one header value
            client.send(b"b" * 8192)
            await client.writer.drain()
        response = await client.read_response()
    except ConnectionError:
        pass  # reset while we were still sending: also a refusal
    else:
        assert response.status == 431
    await client.close()
    assert proxy.rss_peak_kib() < 80_000
    assert (await fetch(proxy.port, "GET", "/")).status == 404  # still serving


async def test_idle_and_slow_header_connections_time_out(start_proxy: StartProxy) -> None:
    proxy = await start_proxy("--keep-alive-timeout", "500")
    idle = await RawClient.connect(proxy.port)
    slow = await RawClient.connect(proxy.port)
    slow.send(b"GET / HTTP/1.1\r\n")
    for _ in range(3):
        await asyncio.sleep(0.2)
        slow.send(b"X-Drip: 1\r\n")
    assert await idle.closed_by_peer(3)
    assert await slow.closed_by_peer(3)
    await idle.close()
    await slow.close()


async def test_early_response_to_upload_closes(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    """A 404 while the client is still sending a body ends the connection cleanly."""
    proxy = await start_proxy()
    client = await RawClient.connect(proxy.port)
    client.send(b"POST /nowhere HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\npartial")
    response = await client.read_response()
    assert response.status == 404
    assert response.header("Connection") == "close"
    assert await client.closed_by_peer()
    await client.close()


async def test_last_activity_follows_traffic(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    proxy = await start_proxy()
    await proxy.add_route("/user/a", backend.url)
    await proxy.add_route("/user/b", backend.url)
    await asyncio.sleep(1.1)
    before = (await proxy.api("GET", "/api/routes")).json()
    await fetch(proxy.port, "GET", "/user/a/x")
    after = (await proxy.api("GET", "/api/routes")).json()
    assert after["/user/a"]["last_activity"] > before["/user/a"]["last_activity"]
    assert after["/user/b"]["last_activity"] == before["/user/b"]["last_activity"]
    idle = await proxy.api("GET", f"/api/routes?inactive_since={after['/user/a']['last_activity']}")
    assert list(idle.json()) == ["/user/b"]


async def test_host_routing(start_proxy: StartProxy, start_backend: StartBackend) -> None:
    hub, alice = await start_backend("hub"), await start_backend("alice")
    proxy = await start_proxy("--host-routing", "--default-target", hub.url)
    await proxy.add_route("/alice.hub.test/user/alice", alice.url)
    on_host = await fetch(proxy.port, "GET", "/user/alice/x", host="Alice.Hub.Test:8000")
    assert on_host.json()["backend"] == "alice"
    other_host = await fetch(proxy.port, "GET", "/user/alice/x", host="bob.hub.test")
    assert other_host.json()["backend"] == "hub"
    bad_host = await fetch(proxy.port, "GET", "/user/alice/x", host="alice.hub.test/../x")
    assert bad_host.status == 400


async def test_stale_pooled_connection_is_retried(start_proxy: StartProxy) -> None:
    """A target that closes idle keep-alive connections must not cause errors."""
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # keep-alive advertised, then dropped: the classic race

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await start_proxy("--default-target", f"http://127.0.0.1:{port}")
        client = await RawClient.connect(proxy.port)
        for _ in range(5):
            response = await client.request("GET", "/x")
            assert response.status == 200 and response.body == b"ok"
            await asyncio.sleep(0.15)
        await client.close()
        await wait_until(lambda: served == 5)
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def raw_backend(start_proxy: StartProxy, reply: bytes, *,
                      close: bool = True) -> AsyncIterator[ProxyProcess]:
    """A proxy whose default target answers every request with the bytes ``reply``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if close:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield await start_proxy("--default-target", f"http://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (b"", 503),  # accepted, then closed without a word
        (b"SPEAKING NONSENSE\r\n\r\n", 502),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 502),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 502),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 502),
    ],
)
async def test_broken_targets(start_proxy: StartProxy, reply: bytes, status: int) -> None:
    async with raw_backend(start_proxy, reply) as proxy:
        response = await fetch(proxy.port, "GET", "/x")
        assert response.status == status
        assert response.header("Content-Security-Policy") == "frame-ancestors 'none'"


async def test_unsolicited_second_response_never_reaches_the_client(
    start_proxy: StartProxy,
) -> None:
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"
    # One write: the proxy reads both at once.
    async with raw_backend(start_proxy, one + evil) as proxy:
        client = await RawClient.connect(proxy.port)
        for path in ("/a", "/b"):  # /b must not be answered by the injected response
            assert (await client.request("GET", path)).body == b"one"
        await client.close()


async def test_truncated_response_closes_the_client(start_proxy: StartProxy) -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part"
    async with raw_backend(start_proxy, short) as proxy:
        client = await RawClient.connect(proxy.port)
        response = await client.request("GET", "/x")  # ends at EOF, short
        assert response.status == 200 and response.body == b"only-part"
        assert await client.closed_by_peer()
        await client.close()


async def test_close_delimited_response_is_rechunked(start_proxy: StartProxy) -> None:
    until_eof = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof"
    async with raw_backend(start_proxy, until_eof) as proxy:
        client = await RawClient.connect(proxy.port)
        response = await client.request("GET", "/x")
        assert response.body == b"until-eof"
        assert response.header("Transfer-Encoding") == "chunked"
        assert response.keep_alive  # the client's connection survives the target's close
        assert (await client.request("GET", "/y")).body == b"until-eof"
        await client.close()
