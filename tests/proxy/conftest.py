"""Fixtures for proxy tests: real proxy processes and small Tornado backends, all on
ephemeral ports, all stopped (by PID) after each test."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from tornado import httpserver, netutil, web, websocket
from tornado.iostream import IOStream

from tests.proxy.proxy_testlib import ProxyProcess, RawClient, spawn_proxy

TOKEN = "proxy-test-token"
# log text that means a bug in the proxy, whatever the test checked
FORBIDDEN_OUTPUT = ("Traceback", "was never retrieved", "Task was destroyed", "Unclosed",
                    "Exception in callback")


@dataclass
class BackendState:
    """What a backend saw; tests read and steer it."""

    name: str
    seen: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    connections: int = 0
    sse_gate: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    upload_delay: float = 0.0
    ws_closed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: list[str] = field(default_factory=list)


@dataclass
class Backend:
    state: BackendState
    server: httpserver.HTTPServer
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def seen(self) -> list[str]:
        return self.state.seen


class _Base(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    @property
    def state(self) -> BackendState:
        state: BackendState = self.settings["state"]
        return state

    def prepare(self) -> None:
        self.state.seen.append(self.request.uri or "")
        self.state.headers.append(dict(self.request.headers))

    def on_finish(self) -> None:
        self.state.finished.append(self.request.uri or "")


class Echo(_Base):
    """Describes the request it got."""

    def _describe(self) -> None:
        body = self.request.body
        self.write(
            {
                "backend": self.state.name,
                "method": self.request.method,
                "uri": self.request.uri,
                "headers": dict(self.request.headers),
                "body_len": len(body),
                "body_sha": hashlib.sha256(body).hexdigest(),
            }
        )

    get = post = put = delete = patch = options = _describe

    def head(self) -> None:
        self.set_header("Content-Length", "1234")
        self.set_header("X-Head", "yes")


class Chunked(_Base):
    async def get(self) -> None:
        for i in range(5):
            self.write(f"part{i};")
            await self.flush()


class NoContent(_Base):
    def get(self) -> None:
        self.set_status(204)


class Sse(_Base):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        for i in range(3):
            self.write(f"data: event{i}\n\n")
            await self.flush()
            await self.state.sse_gate.get()  # the test releases the next event


class Stream(_Base):
    async def get(self) -> None:
        size = int(self.get_argument("bytes"))
        chunk = b"z" * 65536
        if self.get_argument("length", "1") == "1":
            self.set_header("Content-Length", str(size))
        sent = 0
        while sent < size:
            piece = chunk[: min(len(chunk), size - sent)]
            self.write(piece)
            await self.flush()
            sent += len(piece)


class Slow(_Base):
    async def get(self) -> None:
        await asyncio.sleep(float(self.get_argument("delay", "1")))
        self.write("slow done")


@web.stream_request_body
class Upload(_Base):
    def prepare(self) -> None:
        super().prepare()
        self.received = 0
        self.hasher = hashlib.sha256()
        self.first = True

    async def data_received(self, chunk: bytes) -> None:
        if self.first and self.state.upload_delay:
            self.first = False
            await asyncio.sleep(self.state.upload_delay)
        self.received += len(chunk)
        self.hasher.update(chunk)

    def _done(self) -> None:
        self.write({"received": self.received, "sha": self.hasher.hexdigest()})

    post = put = _done


class Ws(websocket.WebSocketHandler):
    @property
    def state(self) -> BackendState:
        state: BackendState = self.settings["state"]
        return state

    def open(self, *args: Any) -> None:
        self.state.seen.append(self.request.uri or "")

    async def on_message(self, message: str | bytes) -> None:
        if message == "close-please":
            self.close(4001, "asked to")
            return
        await self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        self.state.ws_closed.set()


class _CountingServer(httpserver.HTTPServer):
    def handle_stream(self, stream: IOStream, address: Any) -> None:
        self.state.connections += 1  # type: ignore[attr-defined]
        super().handle_stream(stream, address)


def _app(state: BackendState) -> web.Application:
    return web.Application(
        [
            (r".*/chunked", Chunked),
            (r".*/nocontent", NoContent),
            (r".*/sse", Sse),
            (r".*/stream", Stream),
            (r".*/slow", Slow),
            (r".*/upload", Upload),
            (r".*/ws", Ws),
            (r".*", Echo),
        ],
        state=state,
    )


@pytest.fixture(autouse=True)
async def _close_raw_clients() -> AsyncIterator[None]:
    """Close the raw clients a test left open (a failed assert skips its ``close()``): a socket
    left to the garbage collector fails whichever test runs next with a ResourceWarning."""
    yield
    while RawClient.open_clients:
        await RawClient.open_clients.pop().close()


@pytest.fixture
async def start_backend() -> AsyncIterator[Callable[..., Awaitable[Backend]]]:
    """Factory: ``await start_backend("alice")`` → a Tornado backend on a free port."""
    backends: list[Backend] = []

    async def start(name: str = "backend") -> Backend:
        state = BackendState(name)
        server = _CountingServer(_app(state), max_body_size=1 << 34, max_buffer_size=1 << 26)
        server.state = state  # type: ignore[attr-defined]
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        backend = Backend(state, server, sockets[0].getsockname()[1])
        backends.append(backend)
        return backend

    yield start
    for backend in backends:
        backend.server.stop()
        await backend.server.close_all_connections()


@pytest.fixture
async def start_proxy(tmp_path: Any) -> AsyncIterator[Callable[..., Awaitable[ProxyProcess]]]:
    """Factory: ``await start_proxy("--default-target", url)`` → a running proxy process.

    Listens on 127.0.0.1 with ephemeral ports; ``token=None`` starts it without
    ``CONFIGPROXY_AUTH_TOKEN``; ``ready=False`` returns without waiting for the listening
    line. Every process is stopped at teardown, and its output must hold no traceback.
    """
    started: list[ProxyProcess] = []

    async def start(*args: str, token: str | None = TOKEN, ready: bool = True,
                    base_args: bool = True) -> ProxyProcess:
        env = {k: v for k, v in os.environ.items() if k != "CONFIGPROXY_AUTH_TOKEN"}
        if token is not None:
            env["CONFIGPROXY_AUTH_TOKEN"] = token
        defaults = ["--ip", "127.0.0.1", "--port", "0", "--api-port", "0",
                    "--log-level", "debug"] if base_args else []
        proxy, event = spawn_proxy([*defaults, *args], env)
        started.append(proxy)
        if ready:
            await asyncio.to_thread(event.wait, 20)
            assert proxy.port, f"proxy did not start:\n{proxy.output}"
        return proxy

    yield start
    for proxy in started:
        if proxy.proc.poll() is None:
            await proxy.stop()
        for sign_of_a_bug in FORBIDDEN_OUTPUT:
            assert sign_of_a_bug not in proxy.output, proxy.output


def dump(data: Any) -> bytes:
    return json.dumps(data).encode()
