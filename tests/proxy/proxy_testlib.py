"""Test helpers for the proxy: a raw HTTP/1.1 client and a handle on a proxy process.

The raw client sends exactly the bytes it is given (hostile paths, pipelining, half-sent
bodies) and parses answers with httptools, so tests see what went over the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httptools

LISTENING = "himalia-proxy: listening on "
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Response:
    """A parsed HTTP response."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class _Collector:
    def __init__(self, head_only: bool) -> None:
        self.head_only = head_only
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.done = False
        self.interim: list[int] = []
        self.parser: httptools.HttpResponseParser | None = None
        self.keep_alive = False

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim.append(status)
            return
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()
        if self.head_only or status == 101:
            self.done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.done = True


def _parse(raw: bytes, head_only: bool) -> _Collector:
    """Parse ``raw`` from its first byte with a fresh parser (bytes past an upgrade ignored)."""
    collector = _Collector(head_only)
    collector.parser = httptools.HttpResponseParser(collector)
    try:
        collector.parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        if not collector.done:
            raise  # bytes after a complete response may be anything: the next response's
    return collector


def _message_end(raw: bytes, start: int, head_only: bool) -> int:
    """The length of the first complete response in ``raw``, which ends after ``start``.

    httptools does not tell where within one ``feed_data`` a message ended, so this finds the
    shortest prefix that parses as complete: a binary search, as completeness only grows
    with the prefix. Only the read that completed the response is searched.
    """
    low, high = start + 1, len(raw)
    while low < high:
        mid = (low + high) // 2
        if _parse(raw[:mid], head_only).done:
            high = mid
        else:
            low = mid + 1
    return low


class RawClient:
    """One client connection sending raw requests and reading parsed responses.

    Bytes read past the end of one response (pipelined answers arriving in one read) stay
    in ``buffer`` for the next :meth:`read_response`. Every client is tracked in
    :attr:`open_clients` until :meth:`close`, so a fixture can close what a failed test left
    open (an unclosed socket would fail a later test with an unraisable-exception warning).
    """

    open_clients: ClassVar[set[RawClient]] = set()

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.last_interim: list[int] = []
        RawClient.open_clients.add(self)

    @classmethod
    async def connect(
        cls, port: int, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> RawClient:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname="localhost" if tls else None
        )
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        host: str = "proxy.test",
    ) -> Response:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        return await self.read_response(head_only=method == "HEAD")

    async def read_response(self, *, head_only: bool = False, timeout: float = 10) -> Response:
        """The next response; ``head_only`` for the answer to a ``HEAD`` (it has no body)."""
        collector = _parse(b"", head_only)  # only tells when the response is complete
        parser = collector.parser
        assert parser is not None
        raw = bytearray()  # this response's bytes, and maybe the start of the next one's
        end = -1
        async with asyncio.timeout(timeout):
            data, self.buffer = self.buffer, b""
            while True:
                if data:
                    start = len(raw)
                    raw += data
                    try:
                        parser.feed_data(data)
                    except httptools.HttpParserUpgrade as exc:
                        end = start + exc.args[0]
                    except httptools.HttpParserError:
                        if not collector.done:
                            raise
                    if collector.done:
                        if end < 0:
                            end = _message_end(bytes(raw), start, head_only)
                        break
                data = await self.reader.read(65536)
                if not data:
                    if collector.headers_done:
                        break  # close-delimited body
                    raise ConnectionError("connection closed before a response")
        if end >= 0:
            self.buffer = bytes(raw[end:])
            del raw[end:]
        final = _parse(bytes(raw), head_only)  # exactly this response's bytes, parsed anew
        assert final.parser is not None
        self.last_interim = final.interim
        return Response(
            final.parser.get_status_code(),
            final.headers,
            b"".join(final.body),
            final.keep_alive,
        )

    async def closed_by_peer(self, timeout: float = 5) -> bool:
        """True if the peer closes the connection (EOF) within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    async def close(self) -> None:
        RawClient.open_clients.discard(self)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def fetch(port: int, method: str, path: str, **kwargs: Any) -> Response:
    """One request on a fresh connection."""
    client = await RawClient.connect(port)
    try:
        return await client.request(method, path, **kwargs)
    finally:
        await client.close()


@dataclass
class ProxyProcess:
    """A running ``python -m proxy`` child; ports parsed from its listening line."""

    proc: subprocess.Popen[bytes]
    token: str
    lines: list[str] = field(default_factory=list)
    port: int = 0
    api_port: int = 0
    scheme: str = "http"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def api(
        self, method: str, path: str, payload: Any = None, *, token: str | None = None
    ) -> Response:
        """Call the REST API (``path`` after ``/api/routes``-style root, e.g. ``/api/routes``)."""
        token = self.token if token is None else token
        headers = [("Authorization", f"token {token}")] if token else []
        body = None if payload is None else json.dumps(payload).encode()
        return await fetch(self.api_port, method, path, headers=headers, body=body)

    async def add_route(self, key: str, target: str, **data: Any) -> None:
        response = await self.api("POST", f"/api/routes{key}", {"target": target, **data})
        assert response.status == 201, response

    def _status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field}")

    def rss_peak_kib(self) -> int:
        """Peak resident set size (VmHWM) of the proxy process, in KiB."""
        return self._status_kib("VmHWM")

    def rss_kib(self) -> int:
        """Current resident set size (VmRSS) of the proxy process, in KiB."""
        return self._status_kib("VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signum)

    async def wait(self, timeout: float = 15) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout)

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit within 10 s."""
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(10)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return await self.wait(5)


def spawn_proxy(args: Sequence[str], env: dict[str, str]) -> tuple[ProxyProcess, threading.Event]:
    """Start the proxy; a thread collects stderr and sets the event on the listening line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    handle = ProxyProcess(proc, env.get("CONFIGPROXY_AUTH_TOKEN", ""))
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            handle.lines.append(line)
            if line.startswith(LISTENING):
                public, api = line[len(LISTENING) :].split(", api on ")
                handle.scheme = public.split("://")[0]
                handle.port = int(public.rsplit(":", 1)[1])
                handle.api_port = int(api.rsplit(":", 1)[1])
                ready.set()
        proc.stderr.close()
        ready.set()  # process ended: wake the waiter

    threading.Thread(target=pump, daemon=True).start()
    return handle, ready


async def wait_until(predicate: Any, timeout: float = 5, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
