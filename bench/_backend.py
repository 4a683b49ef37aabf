"""A deliberately fast loopback backend for the proxy benchmark.

One process, asyncio protocols, ``httptools`` for parsing and ``uvloop`` when installed, so that the
backend is never what limits the proxy under test.  It serves:

* any path (``GET``/``HEAD``/...) -- ``200`` with a 13-byte body, HTTP/1.1 keep-alive;
* ``GET /download?bytes=N`` -- ``N`` bytes streamed with ``Content-Length`` under back-pressure;
* ``POST /upload`` -- the body is consumed and discarded, the reply is ``{"received": N}``;
* ``GET /ws`` with ``Upgrade: websocket`` -- a websocket echo server (text, binary, ping, close).

Run ``python bench/_backend.py --port 0``; once listening it prints ``backend: listening on PORT``
on stdout and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal
import sys
from typing import cast
from urllib.parse import parse_qs, urlsplit

import httptools

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HELLO_BODY = b"Hello, world!"
HELLO_KEEPALIVE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
    len(HELLO_BODY),
    HELLO_BODY,
)
HELLO_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(HELLO_BODY), HELLO_BODY)
)
CHUNK = b"\x00" * (256 * 1024)
HIGH_WATER = 1024 * 1024


def ws_accept(key: bytes) -> bytes:
    """Return the ``Sec-WebSocket-Accept`` value for a client key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest())


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask``."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def ws_frame(first_byte: int, payload: bytes) -> bytes:
    """Build an unmasked server-to-client frame."""
    n = len(payload)
    if n < 126:
        return bytes((first_byte, n)) + payload
    if n < 65536:
        return bytes((first_byte, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first_byte, 127)) + n.to_bytes(8, "big") + payload


class WebSocketEcho:
    """Echo frames received on ``transport`` after the upgrade handshake."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Consume bytes from the client, echoing every complete frame."""
        buf = self.buf
        buf += data
        out: list[bytes] = []
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            length = b1 & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    break
                length = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length = int.from_bytes(buf[2:10], "big")
                pos = 10
            mask = b""
            if b1 & 0x80:
                if len(buf) < pos + 4:
                    break
                mask = bytes(buf[pos : pos + 4])
                pos += 4
            if len(buf) < pos + length:
                break
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            if mask:
                payload = unmask(payload, mask)
            opcode = b0 & 0x0F
            if opcode == 0x8:  # close: answer and hang up
                out.append(ws_frame(0x88, payload[:2]))
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            if opcode == 0x9:  # ping -> pong
                out.append(ws_frame(0x8A, payload))
            elif opcode in (0x0, 0x1, 0x2):
                out.append(ws_frame(b0 & 0x8F, payload))
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))


class BackendProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection to the backend."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.received = 0
        self.ws: WebSocketEcho | None = None
        self.upgrade = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.streaming: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self.ws.feed(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.ws is not None and len(data) > exc.args[0]:
                self.ws.feed(data[exc.args[0] :])
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        if self.streaming is not None:
            self.streaming.cancel()

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.received = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.received += len(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        path = self.url.split(b"?", 1)[0]
        if path == b"/ws" and self.headers.get(b"upgrade", b"").lower() == b"websocket":
            key = self.headers.get(b"sec-websocket-key", b"")
            transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + ws_accept(key) + b"\r\n\r\n"
            )
            self.ws = WebSocketEcho(transport)
            return
        keep_alive = self.parser.should_keep_alive()
        if path == b"/upload":
            body = b'{"received": %d}' % self.received
            transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"%s\r\n%s" % (len(body), b"" if keep_alive else b"Connection: close\r\n", body)
            )
        elif path == b"/download":
            query = parse_qs(urlsplit(self.url.decode("latin-1")).query)
            size = int(query.get("bytes", ["0"])[0])
            transport.pause_reading()
            self.streaming = asyncio.get_running_loop().create_task(self.stream(size, keep_alive))
            return
        else:
            transport.write(HELLO_KEEPALIVE if keep_alive else HELLO_CLOSE)
        if not keep_alive:
            transport.close()

    async def stream(self, size: int, keep_alive: bool) -> None:
        """Send ``size`` zero bytes, waiting whenever the socket buffer is full."""
        transport = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n%s\r\n"
            % (size, b"" if keep_alive else b"Connection: close\r\n")
        )
        view = memoryview(CHUNK)
        left = size
        while left > 0:
            if not self.can_write.is_set():
                await self.can_write.wait()
            if transport.is_closing():
                return
            n = min(left, len(CHUNK))
            transport.write(view[:n])
            left -= n
        self.streaming = None
        if keep_alive:
            transport.resume_reading()
        else:
            transport.close()


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BackendProtocol, host, port, backlog=4096, reuse_address=True)
    actual = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"backend: listening on {actual}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - stdlib loop fallback
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
