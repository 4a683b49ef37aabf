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
from typing import Any

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


class RawClient:
    """One client connection sending raw requests and reading parsed responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.last_interim: list[int] = []

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
        collector = _Collector(head_only)
        parser = httptools.HttpResponseParser(collector)
        collector.parser = parser
        async with asyncio.timeout(timeout):
            data, self.buffer = self.buffer, b""
            while True:
                if data:
                    try:
                        parser.feed_data(data)
                    except httptools.HttpParserUpgrade as exc:
                        self.buffer = data[exc.args[0] :]
                    if collector.done:
                        break
                data = await self.reader.read(65536)
                if not data:
                    if collector.headers_done:
                        break  # close-delimited body
                    raise ConnectionError("connection closed before a response")
        self.last_interim = collector.interim
        return Response(
            parser.get_status_code(),
            collector.headers,
            b"".join(collector.body),
            collector.keep_alive,
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
