"""WebSockets through the proxy: echo, close propagation, errors, activity, no leaks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
from collections.abc import Awaitable, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.proxy.conftest import Backend
from tests.proxy.proxy_testlib import ProxyProcess, RawClient, wait_until

StartProxy = Callable[..., Awaitable[ProxyProcess]]
StartBackend = Callable[..., Awaitable[Backend]]
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def _setup(start_proxy: StartProxy, start_backend: StartBackend,
                 *args: str) -> tuple[ProxyProcess, Backend]:
    backend = await start_backend("alice")
    proxy = await start_proxy(*args)
    await proxy.add_route("/user/alice", backend.url)
    return proxy, backend


async def test_echo_text_and_binary(start_proxy: StartProxy, start_backend: StartBackend) -> None:
    proxy, backend = await _setup(start_proxy, start_backend)
    url = f"ws://127.0.0.1:{proxy.port}/user/alice/api/kernels/k1/ws?session=s"
    async with connect(url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        payload = bytes(range(256)) * 400  # 100 KiB, several TCP reads
        await ws.send(payload)
        assert await ws.recv() == payload
        for i in range(50):
            await ws.send(f"m{i}")
        assert [await ws.recv() for _ in range(50)] == [f"m{i}" for i in range(50)]
    assert backend.seen == ["/user/alice/api/kernels/k1/ws?session=s"]


async def test_client_close_reaches_the_backend(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    proxy, backend = await _setup(start_proxy, start_backend)
    async with connect(f"ws://127.0.0.1:{proxy.port}/user/alice/ws") as ws:
        await ws.send("ping")
        await ws.recv()
    await asyncio.wait_for(backend.state.ws_closed.wait(), 5)


async def test_backend_close_reaches_the_client(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    proxy, _ = await _setup(start_proxy, start_backend)
    async with connect(f"ws://127.0.0.1:{proxy.port}/user/alice/ws") as ws:
        await ws.send("close-please")
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4001


async def test_backend_vanishing_closes_the_client(start_proxy: StartProxy) -> None:
    """A target that drops the TCP connection mid-session takes the client with it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept)
        await reader.read(1)  # the first frame arrives...
        writer.transport.abort()  # ...and the target dies

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await start_proxy()
        await proxy.add_route("/user/alice", f"http://127.0.0.1:{port}")
        async with connect(f"ws://127.0.0.1:{proxy.port}/user/alice/ws") as ws:
            await ws.send("x")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_errors_before_the_handshake(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    await proxy.add_route("/user/gone", f"http://127.0.0.1:{dead}")
    with pytest.raises(InvalidStatus) as info:
        await connect(f"ws://127.0.0.1:{proxy.port}/user/gone/ws")
    assert info.value.response.status_code == 503
    with pytest.raises(InvalidStatus) as info:
        await connect(f"ws://127.0.0.1:{proxy.port}/user/nobody/ws")
    assert info.value.response.status_code == 404


async def test_frames_count_as_activity(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    proxy, _ = await _setup(start_proxy, start_backend)
    async with connect(f"ws://127.0.0.1:{proxy.port}/user/alice/ws") as ws:
        await asyncio.sleep(1.1)
        before = (await proxy.api("GET", "/api/routes/user/alice")).json()["last_activity"]
        await ws.send("still here")
        await ws.recv()
        after = (await proxy.api("GET", "/api/routes/user/alice")).json()["last_activity"]
    assert after > before


@pytest.mark.slow
async def test_connection_churn_leaks_no_descriptors(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    proxy, _ = await _setup(start_proxy, start_backend, "--log-level", "info")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    await proxy.add_route("/user/stopped", f"http://127.0.0.1:{dead}")
    url = f"ws://127.0.0.1:{proxy.port}/user/alice/ws"
    async with connect(url) as ws:  # warm up
        await ws.send("x")
        await ws.recv()
    await asyncio.sleep(0.2)
    baseline = proxy.open_fds()
    baseline_rss = proxy.rss_kib()

    async def cycle(i: int) -> None:
        if i % 4 == 3:
            with pytest.raises(InvalidStatus):
                await connect(f"ws://127.0.0.1:{proxy.port}/user/stopped/ws")
            return
        async with connect(url) as ws:
            await ws.send(f"m{i}")
            assert await ws.recv() == f"m{i}"
            if i % 4 == 2:
                ws.transport.abort()  # vanish without a closing handshake

    for start in range(0, 600, 30):
        await asyncio.gather(*(cycle(i) for i in range(start, start + 30)))
    # some tunnels may still be closing; the count must come back to where it was
    await wait_until(lambda: proxy.open_fds() <= baseline + 2, timeout=10)
    assert proxy.rss_kib() < baseline_rss + 8 * 1024, (baseline_rss, proxy.rss_kib())


async def test_handshake_pipelined_behind_a_request(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    proxy, _ = await _setup(start_proxy, start_backend)
    client = await RawClient.connect(proxy.port)
    key = base64.b64encode(b"0123456789abcdef")
    client.send(
        b"GET /user/alice/first HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /user/alice/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % key
    )
    first = await client.read_response()
    assert first.json()["uri"] == "/user/alice/first"
    switch = await client.read_response()
    assert switch.status == 101
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    assert switch.header("Sec-WebSocket-Accept") == accept
    client.send(b"\x81\x82abcd" + bytes(b ^ m for b, m in zip(b"hi", b"ab", strict=True)))
    frame = await asyncio.wait_for(client.reader.readexactly(4), 5)
    assert frame == b"\x81\x02hi"  # the echo, unmasked from the server
    await client.close()
