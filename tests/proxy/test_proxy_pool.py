"""The upstream keep-alive pool, with fake transports (no sockets)."""

from __future__ import annotations

import asyncio

from proxy.routes import parse_target
from proxy.upstream import UpstreamConnection, UpstreamPool

TARGET = parse_target("http://127.0.0.1:9")


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def _conn(pool: UpstreamPool) -> tuple[UpstreamConnection, FakeTransport]:
    conn = UpstreamConnection(pool, TARGET.pool_key)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


async def test_reuse_is_most_recent_first_and_skips_dead() -> None:
    pool = UpstreamPool()
    (a, _), (b, tb), (c, tc) = _conn(pool), _conn(pool), _conn(pool)
    for conn in (a, b, c):
        pool.release(conn)
    assert pool.idle_count == 3
    tc.closed = True  # the target hung up; not yet noticed
    assert pool.acquire(TARGET) is b
    assert pool.acquire(TARGET) is a
    assert pool.acquire(TARGET) is None
    assert pool.acquire(parse_target("http://127.0.0.1:10")) is None
    pool.close()
    assert tb.closed is False  # b was handed out, not closed by the pool


async def test_released_connections_read_again() -> None:
    pool = UpstreamPool()
    conn, transport = _conn(pool)
    conn.pause_reading()
    assert not transport.reading
    pool.release(conn)
    assert transport.reading
    pool.close()
    assert transport.closed


async def test_lost_idle_connections_leave_the_pool() -> None:
    pool = UpstreamPool()
    conn, _ = _conn(pool)
    pool.release(conn)
    conn.connection_lost(None)
    assert pool.idle_count == 0


async def test_idle_connections_are_swept() -> None:
    pool = UpstreamPool(idle_timeout=0.1)
    conn, transport = _conn(pool)
    pool.release(conn)
    await asyncio.sleep(0.35)
    assert transport.closed and pool.idle_count == 0
    pool.close()


async def test_idle_set_is_bounded() -> None:
    pool = UpstreamPool(max_idle_per_target=2)
    conns = [_conn(pool) for _ in range(3)]
    for conn, _ in conns:
        pool.release(conn)
    assert pool.idle_count == 2
    assert conns[2][1].closed
    pool.close()


async def test_unexpected_data_on_an_idle_connection_closes_it() -> None:
    pool = UpstreamPool()
    conn, transport = _conn(pool)
    pool.release(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
    assert transport.closed and pool.idle_count == 0
