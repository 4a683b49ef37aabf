"""The raw test client itself: answers that arrive together are still told apart."""

from __future__ import annotations

import asyncio

from tests.proxy.proxy_testlib import RawClient

ANSWERS = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Head: yes\r\n\r\n"  # a HEAD answer
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthird\r\n0\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n"
)


async def test_responses_in_one_read_are_split() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(ANSWERS)  # one write: the client reads them all at once
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    client = await RawClient.connect(server.sockets[0].getsockname()[1])
    try:
        first = await client.read_response()
        assert (first.status, first.body, client.last_interim) == (200, b"first", [100])
        head = await client.read_response(head_only=True)
        assert (head.status, head.body, head.header("X-Head")) == (200, b"", "yes")
        third = await client.read_response()
        assert (third.status, third.body) == (200, b"third")
        assert (await client.read_response()).status == 204
        assert client.buffer == b""
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert client not in RawClient.open_clients
