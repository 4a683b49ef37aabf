"""Python load generators for the proxy benchmark (asyncio protocols + httptools + uvloop).

Each subcommand runs one measurement against ``--host``/``--port`` and prints one JSON object on
stdout, so that ``proxy_bench.py`` can run it in its own process (pinned to the load generator's
CPU) and bound it with a timeout:

``http``
    N keep-alive connections, each sending a ``GET`` as soon as the previous response ended (the
    fallback when ``wrk`` is not installed); reports req/s and p50/p99 latency.
``ws-echo``
    N websocket connections, each with one small text message in flight; reports messages/s and
    p50/p99 round-trip time.
``ws-churn``
    ``--cycles`` websocket connect / one echo / disconnect cycles over ``--concurrency`` parallel
    workers; even cycles close with a close handshake, odd ones drop the TCP connection abruptly.
``upload`` / ``download``
    One streamed ``POST /upload`` or ``GET /download?bytes=N`` of ``--bytes`` bytes; reports time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import httptools

Result = dict[str, Any]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 when empty)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[index]


def run(coro_factory: Callable[[], Any]) -> Any:
    """Run a coroutine on uvloop when available, else on the stdlib loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - stdlib fallback
        return asyncio.run(coro_factory())
    return uvloop.run(coro_factory())


# -- HTTP keep-alive load ------------------------------------------------------------------------


class HttpStats:
    """Counters shared by all connections of one ``http`` run."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.latencies: list[float] = []
        self.non_2xx = 0
        self.errors = 0
        self.open = 0
        self.done = asyncio.get_running_loop().create_future()


class HttpClientProtocol(asyncio.Protocol):
    """One keep-alive client connection sending requests back to back."""

    def __init__(self, stats: HttpStats, requests: Sequence[bytes], offset: int) -> None:
        self.stats = stats
        self.requests = requests
        self.index = offset
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.stats.open += 1
        self.send()

    def send(self) -> None:
        request = self.requests[self.index % len(self.requests)]
        self.index += 1
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.stats.errors += 1
            self.finish()

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        stats = self.stats
        stats.latencies.append(now - self.sent_at)
        if not 200 <= self.parser.get_status_code() < 400:
            stats.non_2xx += 1
        if now >= stats.deadline:
            self.finish()
        elif not self.parser.should_keep_alive():
            self.finish()  # the server closed keep-alive: count it, the runner reconnects
            stats.errors += 1
        else:
            self.send()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self.stats.errors += 1
            self.finished = True
        self.stats.open -= 1
        if self.stats.open == 0 and not self.stats.done.done():
            self.stats.done.set_result(None)


async def http_load(
    host: str, port: int, paths: Sequence[str], connections: int, duration: float
) -> Result:
    """Drive ``connections`` keep-alive connections for ``duration`` seconds."""
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: himalia-bench\r\n\r\n".encode()
        for p in paths
    ]
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    stats = HttpStats(start + duration)
    step = max(1, len(requests) // max(1, connections))
    for i in range(connections):
        await loop.create_connection(
            lambda i=i: HttpClientProtocol(stats, requests, i * step),  # type: ignore[misc]
            host,
            port,
        )
    await asyncio.wait_for(stats.done, duration + 30)
    elapsed = time.perf_counter() - start
    lat = sorted(stats.latencies)
    return {
        "requests": len(lat),
        "seconds": elapsed,
        "rps": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "errors": stats.errors,
        "non_2xx": stats.non_2xx,
    }


# -- websockets -----------------------------------------------------------------------------------


def ws_handshake_request(host: str, port: int, path: str) -> bytes:
    """A client upgrade request with a random key."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def ws_client_frame(opcode: int, payload: bytes, mask: bytes = b"\x00\x00\x00\x00") -> bytes:
    """A masked client frame (FIN set).  The default all-zero mask leaves the payload as is."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    if mask != b"\x00\x00\x00\x00":
        key = (mask * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little"
        )
    return head + mask + payload


class WsStats:
    """Counters shared by all connections of one ``ws-echo`` run."""

    def __init__(self) -> None:
        self.deadline = float("inf")
        self.latencies: list[float] = []
        self.errors = 0
        self.open = 0
        self.ready = 0
        loop = asyncio.get_running_loop()
        self.all_ready = loop.create_future()
        self.done = loop.create_future()


class WsEchoProtocol(asyncio.Protocol):
    """One websocket connection keeping one message in flight.

    The server's echo of an ``n``-byte text frame is exactly ``2 + n`` bytes (``n`` < 126), so
    the client only counts bytes instead of parsing frames.
    """

    def __init__(self, stats: WsStats, handshake: bytes, size: int, expected: int) -> None:
        self.stats = stats
        self.handshake = handshake
        self.frame = ws_client_frame(0x1, b"m" * size)
        self.echo_len = 2 + size
        self.expected = expected
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.head = b""
        self.pending = 0
        self.sent_at = 0.0
        self.finished = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.stats.open += 1
        self.transport.write(self.handshake)

    def start(self) -> None:
        self.send()

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.frame)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.stats.errors += 1
                self.finish()
                return
            self.upgraded = True
            data = self.head[end + 4 :]
            self.stats.ready += 1
            if self.stats.ready == self.expected and not self.stats.all_ready.done():
                self.stats.all_ready.set_result(None)
            if not data:
                return
        self.pending += len(data)
        while self.pending >= self.echo_len:
            self.pending -= self.echo_len
            now = time.perf_counter()
            self.stats.latencies.append(now - self.sent_at)
            if now >= self.stats.deadline:
                self.finish()
                return
            self.send()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self.stats.errors += 1
            self.finished = True
        self.stats.open -= 1
        if not self.stats.all_ready.done():
            self.stats.all_ready.set_result(None)
        if self.stats.open == 0 and not self.stats.done.done():
            self.stats.done.set_result(None)


async def ws_echo(
    host: str, port: int, path: str, connections: int, duration: float, size: int
) -> Result:
    """Ping-pong ``size``-byte messages on ``connections`` websockets for ``duration`` seconds."""
    if size >= 126:
        raise ValueError("ws-echo message size must be < 126 bytes")
    loop = asyncio.get_running_loop()
    stats = WsStats()
    clients: list[WsEchoProtocol] = []
    for _ in range(connections):
        hs = ws_handshake_request(host, port, path)
        _, proto = await loop.create_connection(
            lambda hs=hs: WsEchoProtocol(stats, hs, size, connections),  # type: ignore[misc]
            host,
            port,
        )
        clients.append(proto)
    await asyncio.wait_for(stats.all_ready, 30)
    start = time.perf_counter()
    stats.deadline = start + duration
    for c in clients:
        if c.upgraded and not c.finished:
            c.start()
    await asyncio.wait_for(stats.done, duration + 30)
    elapsed = time.perf_counter() - start
    lat = sorted(stats.latencies)
    return {
        "messages": len(lat),
        "seconds": elapsed,
        "mps": len(lat) / elapsed,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "errors": stats.errors,
    }


async def ws_cycle(host: str, port: int, path: str, clean: bool) -> None:
    """Connect, upgrade, echo one message, then close cleanly or drop the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(ws_handshake_request(host, port, path))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"upgrade refused: {head[:40]!r}")
        writer.write(ws_client_frame(0x1, b"x", b"\x01\x02\x03\x04"))
        echo = await reader.readexactly(3)
        if echo != b"\x81\x01x":
            raise ConnectionError(f"bad echo {echo!r}")
        if clean:
            writer.write(ws_client_frame(0x8, (1000).to_bytes(2, "big"), b"\x05\x06\x07\x08"))
            close = await reader.readexactly(4)
            if close[0] != 0x88:
                raise ConnectionError(f"bad close frame {close!r}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def ws_churn(host: str, port: int, path: str, cycles: int, concurrency: int) -> Result:
    """Run ``cycles`` connect/echo/disconnect cycles over ``concurrency`` workers."""
    counter = iter(range(cycles))
    failures: list[str] = []

    async def worker() -> None:
        for i in counter:
            try:
                await asyncio.wait_for(ws_cycle(host, port, path, clean=i % 2 == 0), 10)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "cycles": cycles,
        "failures": len(failures),
        "failure_sample": failures[:3],
        "seconds": elapsed,
        "cycles_per_s": cycles / elapsed,
    }


# -- streamed upload / download ------------------------------------------------------------------


class _Body:
    """httptools callbacks collecting a response's status and body size."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.size = 0
        self.body = bytearray()
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.keep:
            self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def _read_response(sock: socket.socket, keep_body: bool) -> tuple[int, _Body]:
    body = _Body(keep_body)
    parser = httptools.HttpResponseParser(body)
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    while not body.complete:
        n = sock.recv_into(buf)
        if n == 0:
            parser.feed_data(b"")
            break
        parser.feed_data(view[:n])
    if not body.complete:
        raise ConnectionError("connection closed before the end of the response")
    return parser.get_status_code(), body


def download(host: str, port: int, size: int) -> Result:
    """``GET /download?bytes=size`` and read the body as it streams."""
    with socket.create_connection((host, port), timeout=120) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET /download?bytes={size} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        status, body = _read_response(sock, keep_body=False)
        elapsed = time.perf_counter() - start
    if status != 200 or body.size != size:
        raise ConnectionError(f"download: status {status}, {body.size} of {size} bytes")
    return {"bytes": size, "seconds": elapsed, "mb_per_s": size / elapsed / 1e6}


def upload(host: str, port: int, size: int) -> Result:
    """``POST /upload`` with a ``Content-Length`` body written in 1 MiB pieces."""
    chunk = b"\x00" * (1024 * 1024)
    with socket.create_connection((host, port), timeout=120) as sock:
        start = time.perf_counter()
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        left = size
        while left > 0:
            n = min(left, len(chunk))
            sock.sendall(chunk[:n] if n < len(chunk) else chunk)
            left -= n
        status, body = _read_response(sock, keep_body=True)
        elapsed = time.perf_counter() - start
    received = json.loads(bytes(body.body)).get("received") if status == 200 else None
    if received != size:
        raise ConnectionError(f"upload: status {status}, backend received {received} of {size}")
    return {"bytes": size, "seconds": elapsed, "mb_per_s": size / elapsed / 1e6}


# -- command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run one measurement and print its JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["http", "ws-echo", "ws-churn", "upload", "download"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", action="append", help="request path (repeatable; http mode)")
    parser.add_argument("--paths-file", help="file with one request path per line (http mode)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=32, help="ws-echo message size in bytes")
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--bytes", type=int, default=100 * 1024 * 1024)
    args = parser.parse_args(argv)

    result: Result
    if args.mode == "http":
        paths: list[str] = list(args.path or [])
        if args.paths_file:
            with open(args.paths_file) as f:
                paths += [line.strip() for line in f if line.strip()]
        result = run(
            lambda: http_load(args.host, args.port, paths or ["/"], args.connections, args.duration)
        )
    elif args.mode == "ws-echo":
        result = run(
            lambda: ws_echo(args.host, args.port, "/ws", args.connections, args.duration, args.size)
        )
    elif args.mode == "ws-churn":
        result = run(lambda: ws_churn(args.host, args.port, "/ws", args.cycles, args.concurrency))
    elif args.mode == "upload":
        result = upload(args.host, args.port, args.bytes)
    else:
        result = download(args.host, args.port, args.bytes)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
