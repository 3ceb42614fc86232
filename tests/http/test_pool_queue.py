"""``ConnectionPool`` with ``max_connections`` (http/pool.py), driven directly against a real
TCP upstream that counts the connections it accepts: the limit holds for connects in
progress and open connections, waiters are served first in, first out, a released
connection goes straight to the first waiter, a closed one passes its slot on, a waiter
times out with ``PoolOverflowError``, and a cancelled waiter leaks nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from portway.config.schema import PoolConfig
from portway.http.client import UpstreamConnection
from portway.http.exceptions import PoolOverflowError
from portway.http.pool import ConnectionPool
from tests.helpers import free_port, tcp_server

#: generous: the machine is shared
LONG = 30.0


@dataclass
class Counting:
    """A TCP server that accepts and holds connections (it never answers)."""

    port: int
    accepted: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


@asynccontextmanager
async def counting_server() -> AsyncIterator[Counting]:
    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        srv.accepted += 1
        srv.writers.append(writer)
        try:
            await reader.read()  # until the client closes
        except (ConnectionError, asyncio.CancelledError):
            pass  # (cancelled: the test's loop is closing)
        finally:
            writer.close()

    async with tcp_server(conn) as port:
        srv = Counting(port)
        yield srv


def pool_for(port: int, **kw: object) -> ConnectionPool:
    return ConnectionPool("127.0.0.1", port, PoolConfig.model_validate(kw))


def deadline() -> float:
    return asyncio.get_running_loop().time() + LONG


def reusable(conn: UpstreamConnection) -> UpstreamConnection:
    """What a completed keep-alive exchange leaves (``release`` then keeps it)."""
    assert conn.reusable
    return conn


async def until(cond: Callable[[], bool], timeout: float = LONG) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_cold_pool_opens_at_most_the_limit_and_hands_a_release_to_the_waiter() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=2, queue_timeout="30s")
        first = await asyncio.gather(*(pool.acquire(5.0, deadline()) for _ in range(2)))
        assert [reused for _, reused in first] == [False, False]
        third = asyncio.ensure_future(pool.acquire(5.0, deadline()))
        await until(lambda: pool.waiting == 1)
        assert pool.open_count == 2 and not third.done()
        pool.release(reusable(first[0][0]))
        conn, reused = await asyncio.wait_for(third, LONG)
        # the very connection released, never through the idle stack
        assert conn is first[0][0] and reused
        assert pool.idle_count == 0 and pool.open_count == 2 and pool.waiting == 0
        pool.release(conn)
        pool.release(first[1][0])
        assert pool.idle_count == 2
        await until(lambda: srv.accepted == 2)
        assert pool.opened == 2
        pool.close()
        await until(lambda: pool.open_count == 0)


async def test_connects_in_progress_count_against_the_limit() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=2, queue_timeout="30s")
        # five at once, nothing connected yet: two connect, three queue
        tasks = [asyncio.ensure_future(pool.acquire(5.0, deadline())) for _ in range(5)]
        await until(lambda: pool.waiting == 3)
        assert pool.open_count == 2
        done = [await asyncio.wait_for(t, LONG) for t in tasks[:2]]
        for c, _ in done:
            pool.release(c)
        rest = [await asyncio.wait_for(t, LONG) for t in tasks[2:4]]
        for c, _ in rest:
            pool.release(c)
        last, reused = await asyncio.wait_for(tasks[4], LONG)
        assert reused and srv.accepted == 2 and pool.opened == 2
        last.abort()
        pool.close()


async def test_waiters_are_served_first_in_first_out() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=1, queue_timeout="30s")
        conn, _ = await pool.acquire(5.0, deadline())
        order: list[int] = []

        async def waiter(i: int) -> None:
            c, reused = await pool.acquire(5.0, deadline())
            assert reused and c is conn
            order.append(i)
            pool.release(c)

        tasks = []
        for i in range(6):
            tasks.append(asyncio.ensure_future(waiter(i)))
            await until(lambda i=i: pool.waiting == i + 1)  # type: ignore[misc]
        pool.release(conn)
        await asyncio.wait_for(asyncio.gather(*tasks), LONG)
        assert order == [0, 1, 2, 3, 4, 5]
        assert srv.accepted == 1 and pool.idle_count == 1 and pool.open_count == 1
        pool.close()


async def test_a_waiter_not_served_in_time_overflows() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=1, queue_timeout="50ms")
        conn, _ = await pool.acquire(5.0, deadline())
        with pytest.raises(PoolOverflowError) as e:
            await pool.acquire(5.0, deadline())
        assert e.value.waited
        assert pool.overflows == 1 and pool.waiting == 0 and pool.open_count == 1
        # the slot is intact: a release goes to the idle stack, the next acquire takes it
        pool.release(conn)
        again, reused = await pool.acquire(5.0, deadline())
        assert again is conn and reused and srv.accepted == 1
        again.abort()
        await until(lambda: pool.open_count == 0)


async def test_the_request_deadline_bounds_the_wait() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=1, queue_timeout="30s")
        conn, _ = await pool.acquire(5.0, deadline())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(PoolOverflowError):
            await pool.acquire(5.0, loop.time() + 0.05)
        assert loop.time() - t0 < LONG / 2
        conn.abort()


async def test_max_queue_refuses_at_once() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=1, queue_timeout="30s", max_queue=1)
        conn, _ = await pool.acquire(5.0, deadline())
        queued = asyncio.ensure_future(pool.acquire(5.0, deadline()))
        await until(lambda: pool.waiting == 1)
        with pytest.raises(PoolOverflowError) as e:
            await pool.acquire(5.0, deadline())
        assert not e.value.waited and pool.overflows == 1
        pool.release(conn)
        got, _ = await asyncio.wait_for(queued, LONG)
        assert got is conn
        got.abort()


@pytest.mark.parametrize("served", [False, True], ids=["queued", "served"])
async def test_a_cancelled_waiter_leaks_nothing(served: bool) -> None:
    """Cancelled while queued, it leaves the queue; cancelled just after a release resolved
    its future (before its task resumed), it passes the connection to the next waiter."""
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=1, queue_timeout="30s")
        conn, _ = await pool.acquire(5.0, deadline())
        gone = asyncio.ensure_future(pool.acquire(5.0, deadline()))
        await until(lambda: pool.waiting == 1)
        kept = asyncio.ensure_future(pool.acquire(5.0, deadline()))
        await until(lambda: pool.waiting == 2)
        if served:
            pool.release(conn)  # resolves ``gone``'s future…
        gone.cancel()  # …(served) whose task is cancelled before it resumes
        await asyncio.gather(gone, return_exceptions=True)
        assert gone.cancelled()
        if not served:
            assert pool.waiting == 1
            pool.release(conn)
        got, _ = await asyncio.wait_for(kept, LONG)
        assert got is conn and pool.open_count == 1 and srv.accepted == 1
        assert pool.waiting == 0
        got.abort()
        await until(lambda: pool.open_count == 0)


async def test_a_closed_connection_passes_its_slot_to_the_first_waiter() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=1, queue_timeout="30s")
        conn, _ = await pool.acquire(5.0, deadline())
        waiter = asyncio.ensure_future(pool.acquire(5.0, deadline()))
        await until(lambda: pool.waiting == 1)
        conn.abort()  # e.g. an exchange that failed: the waiter connects a new one
        fresh, reused = await asyncio.wait_for(waiter, LONG)
        assert fresh is not conn and not reused
        assert pool.open_count == 1
        await until(lambda: srv.accepted == 2)
        fresh.close()
        assert pool.open_count == 0


async def test_the_peer_closing_a_busy_connection_frees_its_slot() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_connections=1, queue_timeout="30s")
        conn, _ = await pool.acquire(5.0, deadline())
        waiter = asyncio.ensure_future(pool.acquire(5.0, deadline()))
        await until(lambda: pool.waiting == 1 and srv.accepted == 1)
        srv.writers[0].transport.abort()  # the upstream drops it (connection_lost)
        fresh, reused = await asyncio.wait_for(waiter, LONG)
        assert conn.closed and not reused and pool.open_count == 1
        fresh.abort()


async def test_a_failed_connect_gives_its_slot_back() -> None:
    port = free_port()  # nothing listens
    pool = pool_for(port, max_connections=1, queue_timeout="30s")
    for _ in range(3):
        with pytest.raises(OSError):
            await pool.acquire(5.0, deadline())
        assert pool.open_count == 0 and pool.waiting == 0


async def test_unlimited_pool_never_queues() -> None:
    async with counting_server() as srv:
        pool = pool_for(srv.port)
        got = await asyncio.gather(*(pool.acquire(5.0, deadline()) for _ in range(8)))
        assert pool.waiting == 0 and pool.open_count == 8
        await until(lambda: srv.accepted == 8)
        for c, _ in got:
            c.abort()
        assert pool.open_count == 0


@pytest.mark.parametrize("max_idle", [1, 2, 3, 10])
async def test_the_idle_stack_is_a_lifo_of_the_released_connections(max_idle: int) -> None:
    """The idle stack (its top in a slot of its own, ``ConnectionPool._top``) against a plain
    list model of it: over random releases, takes, closes by the peer and idle timeouts, the
    same connection taken, the same ones closed, the same stack."""
    import random

    rnd = random.Random(max_idle)
    async with counting_server() as srv:
        pool = pool_for(srv.port, max_idle=max_idle, idle_timeout="10s")
        conns = [
            c for c, _ in await asyncio.gather(*(pool.acquire(5.0, deadline()) for _ in range(6)))
        ]
        busy = list(conns)
        model: list[UpstreamConnection] = []
        closed: set[int] = set()
        now = 1000.0
        for step in range(300):
            op = rnd.randrange(5)
            now += rnd.choice((0.0, 1.0, 4.0, 11.0)) if op == 4 else 0.5
            if op in (0, 1) and busy:
                c = busy.pop(rnd.randrange(len(busy)))
                pool.release(c, now)
                c.idle_since = now  # (the model's view: what release sets)
                if len(model) >= max_idle:
                    closed.add(id(model.pop(0)))
                model.append(c)
                if len(model) > 1 and now - model[0].idle_since > 10.0:
                    for m in list(model):
                        if now - m.idle_since > 10.0 or id(m) in closed:
                            closed.add(id(m))
                            model.remove(m)
            elif op == 2:
                got = pool.acquire_idle(now)
                want = None
                while model:
                    m = model.pop()
                    if id(m) in closed:
                        continue
                    if now - m.idle_since > 10.0:
                        closed.add(id(m))
                        continue
                    want = m
                    break
                assert got is want, step
                if got is not None:
                    busy.append(got)
            elif op == 3 and model:
                m = rnd.choice(model)
                m.close()  # (as the peer closing it while idle: the pool sees ``closed``)
                closed.add(id(m))
            assert pool.idle_stack() == model, step
            assert pool.idle_count == len(model)
            assert {id(c) for c in conns if c.closed} == closed, step
        pool.close()
        assert pool.idle_count == 0 and all(c.closed for c in model)
