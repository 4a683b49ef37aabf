"""Large bodies stream through with back-pressure: the proxy never holds them in memory."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import pytest

from tests.proxy.conftest import Backend
from tests.proxy.proxy_testlib import ProxyProcess, RawClient

StartProxy = Callable[..., Awaitable[ProxyProcess]]
StartBackend = Callable[..., Awaitable[Backend]]

SIZE = 200 * 1024 * 1024
RSS_LIMIT_KIB = 100 * 1024


@pytest.mark.slow
async def test_download_with_a_stalled_reader_stays_small(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    proxy = await start_proxy("--log-level", "info")
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    # length=0: the backend streams chunked, the proxy re-chunks every piece
    client.send(b"GET /big/stream?bytes=%d&length=0 HTTP/1.1\r\nHost: h\r\n\r\n" % SIZE)
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
    assert b"Transfer-Encoding: chunked" in head
    await asyncio.sleep(1.0)  # the backend pushes as fast as it can; we read nothing
    stalled_rss = proxy.rss_peak_kib()
    received = 0
    while True:
        size_line = await client.reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        chunk = await client.reader.readexactly(size + 2)
        received += size
        if size == 0:
            break
    await client.close()
    assert received == SIZE
    assert stalled_rss < RSS_LIMIT_KIB
    assert proxy.rss_peak_kib() < RSS_LIMIT_KIB, proxy.rss_peak_kib()
    assert chunk == b"\r\n"


@pytest.mark.slow
async def test_upload_to_a_stalled_backend_stays_small(
    start_proxy: StartProxy, start_backend: StartBackend
) -> None:
    backend = await start_backend()
    backend.state.upload_delay = 1.0  # the backend reads nothing for a second
    proxy = await start_proxy("--log-level", "info")
    await proxy.add_route("/", backend.url)
    client = await RawClient.connect(proxy.port)
    client.send(b"PUT /files/upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % SIZE)
    block = bytes(range(256)) * 1024
    digest = hashlib.sha256()
    for _ in range(SIZE // len(block)):
        client.send(block)
        digest.update(block)
        await client.writer.drain()
    response = await client.read_response(timeout=60)
    await client.close()
    assert response.status == 200
    assert response.json() == {"received": SIZE, "sha": digest.hexdigest()}
    assert proxy.rss_peak_kib() < RSS_LIMIT_KIB, proxy.rss_peak_kib()
