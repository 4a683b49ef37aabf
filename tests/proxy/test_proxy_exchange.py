"""The exchange state machine, driven without sockets: what reaches the client, byte for byte.

Both ends are fakes recording what the exchange does, so a test controls exactly which bytes
arrive in one read — the case a real socket only produces when the machine is busy.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.errors import ErrorPages
from proxy.exchange import Exchange
from proxy.exchange_state import (
    ENDED,
    TRANSITIONS,
    InvalidTransition,
    Phase,
    check_transition,
)
from proxy.headers import Forwarded, RequestHeaders
from proxy.messages import ClientHandler, ProxyContext, Request
from proxy.routes import Route, Target, parse_target
from proxy.store import RouteStore
from proxy.upstream import UpstreamConnection, UpstreamPool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
EVIL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Evil: 1\r\n\r\nevil!"


class FakeTransport(asyncio.Transport):
    """Records what the exchange writes to the target."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakePool(UpstreamPool):
    """Hands out fake target connections: idle ones first, then fresh ones."""

    def __init__(self) -> None:
        super().__init__()
        self.idle: list[UpstreamConnection] = []
        self.fresh: list[UpstreamConnection] = []
        self.released: list[UpstreamConnection] = []

    def new(self) -> UpstreamConnection:
        conn = UpstreamConnection(self, ("http", "127.0.0.1", 1))
        conn.connection_made(FakeTransport())
        return conn

    def acquire(self, target: Target) -> UpstreamConnection | None:
        return self.idle.pop() if self.idle else None

    async def connect(self, target: Target) -> UpstreamConnection:
        conn = self.new()
        self.fresh.append(conn)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        conn.handler = None
        self.released.append(conn)


class FakeClient:
    """The client connection (``proxy.messages.Downstream``), recording what it is told."""

    def __init__(self) -> None:
        self.write_paused = False
        self.forwarded = Forwarded(b"127.0.0.1", b"80", b"http")
        self.received = b""
        self.done: list[bool] = []  # keep_alive of each exchange_done
        self.tunnel: ClientHandler | None = None

    def write(self, data: bytes) -> None:
        self.received += data

    def pause_reading(self, reason: int) -> None:
        pass

    def resume_reading(self, reason: int) -> None:
        pass

    def exchange_done(self, exchange: object, keep_alive: bool) -> None:
        self.done.append(keep_alive)

    def start_tunnel(self, tunnel: ClientHandler) -> None:
        self.tunnel = tunnel

    def close(self) -> None:
        pass


class Harness:
    """One exchange between a fake client and fake targets."""

    def __init__(self, method: bytes = b"GET", *headers: tuple[bytes, bytes]) -> None:
        self.pool = FakePool()
        self.client = FakeClient()
        ctx = ProxyContext(RouteStore(), self.pool, ErrorPages(), time.monotonic)
        request = Request(method, b"/x", "/x", RequestHeaders.of([(b"Host", b"h"), *headers]),
                          http10=False, keep_alive=True, started=time.monotonic())
        route = Route("/", parse_target("http://127.0.0.1:1"), {}, time.monotonic())
        self.exchange = Exchange(ctx, self.client, request, route)

    async def start(self) -> UpstreamConnection:
        """Start the exchange; return the target connection it was given."""
        self.exchange.start()
        while not self.pool.fresh:  # the connection is made in a task
            await asyncio.sleep(0)
        return self.pool.fresh[-1]


def _closed(conn: UpstreamConnection) -> bool:
    return conn.closed


async def test_one_answer_is_relayed_and_its_connection_reused() -> None:
    h = Harness()
    up = await h.start()
    assert h.exchange.phase is Phase.AWAITING
    up.data_received(OK)
    assert h.client.received == OK
    assert h.client.done == [True]
    assert h.pool.released == [up] and h.exchange.phase is Phase.DONE


async def test_a_second_response_in_the_same_read_is_not_relayed() -> None:
    h = Harness()
    up = await h.start()
    up.data_received(OK + EVIL)
    assert h.client.received == OK  # not the injected answer to the client's next request
    assert h.client.done == [True]
    assert h.pool.released == [] and _closed(up)


async def test_a_body_after_a_head_answer_is_not_relayed() -> None:
    h = Harness(b"HEAD")
    up = await h.start()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!")
    assert h.client.received.endswith(b"\r\n\r\n") and b"evil" not in h.client.received
    assert h.client.done == [True]
    assert h.pool.released == [] and _closed(up)


async def test_a_response_after_an_unasked_switch_is_a_502() -> None:
    h = Harness()
    up = await h.start()
    up.data_received(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + EVIL)
    assert h.client.received.startswith(b"HTTP/1.1 502 ")
    assert b"evil" not in h.client.received
    assert h.exchange.phase is Phase.DONE and _closed(up)


async def test_interim_heads_then_the_answer_in_one_read() -> None:
    h = Harness(b"GET", (b"Expect", b"100-continue"))
    up = await h.start()
    up.data_received(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert h.client.received.startswith(b"HTTP/1.1 100 Continue\r\n")
    assert h.client.received.endswith(OK)
    assert h.client.done == [True]


async def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one() -> None:
    h = Harness()
    stale = h.pool.new()
    h.pool.idle.append(stale)
    h.exchange.start()
    assert h.exchange.phase is Phase.AWAITING and not h.pool.fresh
    stale.connection_lost(None)  # the target had closed it as idle
    assert h.exchange.phase is Phase.CONNECTING
    while not h.pool.fresh:
        await asyncio.sleep(0)
    h.pool.fresh[0].connection_lost(None)  # a fresh connection is not retried
    assert h.client.received.startswith(b"HTTP/1.1 503 ")
    assert len(h.pool.fresh) == 1


async def test_target_closing_mid_body_truncates_the_answer() -> None:
    h = Harness()
    up = await h.start()
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert h.exchange.phase is Phase.STREAMING
    up.connection_lost(None)
    assert h.client.received.endswith(b"abc")
    assert h.client.done == [False]


async def test_close_delimited_answer_ends_with_the_connection() -> None:
    h = Harness()
    up = await h.start()
    up.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc")
    up.connection_lost(None)
    assert h.client.received.endswith(b"3\r\nabc\r\n0\r\n\r\n")  # re-chunked, terminated
    assert h.client.done == [True]


async def test_client_leaving_ends_the_exchange_once() -> None:
    h = Harness()
    up = await h.start()
    h.exchange.client_lost()
    h.exchange.client_lost()
    assert h.exchange.phase is Phase.DONE and _closed(up)
    assert h.client.done == []


# -- the transition table itself


def test_ended_phases_have_no_way_out() -> None:
    assert all(not TRANSITIONS[phase] for phase in ENDED)


def test_the_client_may_leave_in_every_phase() -> None:
    for phase in Phase:
        assert phase in ENDED or Phase.DONE in TRANSITIONS[phase], phase


def test_every_phase_is_reachable() -> None:
    seen, todo = {Phase.ROUTING}, [Phase.ROUTING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(Phase)


def test_a_wrong_move_raises() -> None:
    check_transition(Phase.STREAMING, Phase.COMPLETE)
    with pytest.raises(InvalidTransition, match="COMPLETE to STREAMING"):
        check_transition(Phase.COMPLETE, Phase.STREAMING)
