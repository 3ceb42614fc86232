"""Keep-alive connection pool per target, with an optional limit on open connections.

Idle connections: a LIFO stack (the most recently used socket is the warmest and the least
likely to have been closed by the upstream's idle timer). Connections the upstream closed
while idle are dropped at acquire time; idle ones past ``idle_timeout`` are closed by a lazy
sweep, so an idle pool costs no timers.

The limit (``max_connections``: httpcore's pool limit, Envoy's circuit-breaker
``max_connections``/``max_pending_requests``). Every connection the pool opens counts from the
moment its connect starts until it closes — by us (``close``/``abort``) or by the peer
(``connection_lost``), whichever comes first — idle and busy alike, a connection taken over
by an upgrade tunnel included. The connection keeps its own count
(:class:`PooledConnection`), so none of the places that end an exchange has to tell the pool,
and a slot can never leak. A caller that finds no idle connection and the count at the limit
queues (FIFO, :meth:`ConnectionPool.acquire`):

- a connection :meth:`~ConnectionPool.release`\\ d while anyone waits goes straight to the
  first waiter (never through the idle stack, so nobody can overtake the queue);
- a connection that closes passes its slot to the first waiter, who connects a new one;
- a waiter not served within ``queue_timeout`` (or refused because ``max_queue`` are waiting)
  gets :class:`~portway.http.exceptions.PoolOverflowError`;
- a waiter cancelled (its client left) leaves the queue; a connection or slot handed to it
  just before is passed on, never leaked.

A waiter's states: *queued* → *served* (a connection, or ``None``: a slot to connect with) |
*expired* | *cancelled*. The count (``open_count``) is: connects in progress + connections
open, and never exceeds ``max_connections``.

The task-free path (``proxy/fast.py``) only ever takes an idle connection
(:meth:`~ConnectionPool.acquire_idle`, which the queue never holds back: the stack is empty
while anyone waits) and hands a request that would have to connect or wait to the general
path.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
from collections import deque
from typing import Any, cast

from portway.http.client import UpstreamConnection
from portway.http.exceptions import PoolOverflowError
from portway.http.flow import as_protocol
from portway.http.limits import PoolSettings


class PooledConnection(UpstreamConnection):
    """An upstream connection that holds one of its pool's slots until it closes."""

    __slots__ = ("counted", "pool")

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: ConnectionPool) -> None:
        super().__init__(loop)
        self.pool = pool
        #: holds a slot (set once connected: until then the connect owns the slot)
        self.counted = False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._uncount()

    def abort(self) -> None:
        super().abort()
        self._uncount()

    def close(self) -> None:
        super().close()
        self._uncount()

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.pool.slot_freed()


class ConnectionPool:
    """Connections to one ``host:port``: idle keep-alive ones, and the count of open ones
    against ``config.max_connections`` (``None``: unlimited)."""

    def __init__(self, host: str, port: int, config: PoolSettings, scheme: str = "http") -> None:
        self.host = host
        self.port = port
        self.config = config
        # plain copies: read on every acquire/release (pydantic attribute reads are slow)
        self._idle_timeout = config.idle_timeout
        self._max_idle = config.max_idle
        mc = config.max_connections
        #: -1: unlimited
        self._max = -1 if mc is None else mc
        self._queue_timeout = config.queue_timeout
        mq = config.max_queue
        self._max_queue = -1 if mq is None else mq
        #: the idle stack is ``_idle + [_top]``: its top in a slot of its own, so a pool of
        #: one keep-alive connection taken and given back per request never empties the
        #: list (a list popped to empty frees its storage and the next append allocates it
        #: again). ``_top`` is None only when the whole stack is empty.
        self._top: UpstreamConnection | None = None
        self._idle: list[UpstreamConnection] = []
        self._waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        #: connects in progress + open connections (see the module docstring)
        self._open = 0
        self._ssl: Any = _ssl.create_default_context() if scheme == "https" else None
        self.opened = 0
        #: requests that got no connection (queue timeout or full queue)
        self.overflows = 0
        self.closed_pool = False

    def acquire_idle(self, now: float = -1.0) -> UpstreamConnection | None:
        """A live idle connection, or ``None``. ``now``: the loop time, when the caller has
        just read it."""
        conn = self._top
        if conn is None:
            return None
        limit = self._idle_timeout
        idle = self._idle
        while conn is not None:
            self._top = idle.pop() if idle else None
            if conn.closed or conn.closing or conn.transport is None:
                conn = self._top
                continue
            # the connection's own loop: asyncio.get_running_loop() costs a getpid() syscall
            if (now if now >= 0 else conn.now()) - conn.idle_since > limit:
                conn.close()
                conn = self._top
                continue
            return conn
        return None

    async def acquire(
        self, connect_timeout: float, deadline: float
    ) -> tuple[UpstreamConnection, bool]:
        """A connection for one exchange, and whether it carried requests before (an idle
        one, or one handed over in the queue). Connects within ``connect_timeout``; waits in
        the queue for ``queue_timeout`` at most, and never past ``deadline`` (loop time).

        Raises ``OSError``/``TimeoutError`` when connecting fails and
        :class:`PoolOverflowError` when no connection came in time."""
        conn = self.acquire_idle()
        if conn is not None:
            return conn, True
        loop = asyncio.get_running_loop()
        if self._max < 0 or (self._open < self._max and not self._waiters):
            self._open += 1
        else:
            given = await self._wait(loop, min(self._queue_timeout, deadline - loop.time()))
            if given is not None:
                return given, True
            # a slot was passed to us: connect with it
        remaining = deadline - loop.time()
        return await self._connect(max(0.001, min(connect_timeout, remaining))), False

    async def _connect(self, timeout: float) -> UpstreamConnection:
        """Open a connection with the slot the caller reserved (freed again on failure)."""
        loop = asyncio.get_running_loop()
        made: list[PooledConnection] = []

        def factory() -> asyncio.BaseProtocol:
            c = PooledConnection(loop, self)
            made.append(c)
            return as_protocol(c)

        try:
            async with asyncio.timeout(timeout):
                _, p = await loop.create_connection(
                    factory,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except BaseException:
            for c in made:
                c.abort()  # (not counted yet: the slot is still ours)
            self.slot_freed()
            raise
        conn = cast(PooledConnection, p)
        self.opened += 1
        conn.counted = True
        if conn.closed:  # lost before we got it: its slot goes at once
            conn._uncount()
        return conn

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, timeout: float
    ) -> UpstreamConnection | None:
        waiters = self._waiters
        if timeout <= 0 or (self._max_queue >= 0 and len(waiters) >= self._max_queue):
            self.overflows += 1
            raise PoolOverflowError(
                f"connection limit of {self.host}:{self.port} reached", waited=False
            )
        fut: asyncio.Future[UpstreamConnection | None] = loop.create_future()
        waiters.append(fut)
        timer = loop.call_later(timeout, self._expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.cancelled():
                # still queued: leave the queue (an expired waiter already left it)
                if fut in waiters:
                    waiters.remove(fut)
            elif fut.exception() is None:
                # served just before the cancellation: pass on what we were given
                self._give_back(fut.result())
            raise
        finally:
            timer.cancel()

    def _expire(self, fut: asyncio.Future[UpstreamConnection | None]) -> None:
        if fut.done():
            return
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)
        self.overflows += 1
        fut.set_exception(
            PoolOverflowError(f"no connection to {self.host}:{self.port} within the queue timeout")
        )

    def _give_back(self, conn: UpstreamConnection | None) -> None:
        if conn is None:
            self.slot_freed()
        else:
            self.release(conn)

    def _serve(self, item: UpstreamConnection | None) -> bool:
        """Hand ``item`` (a connection, or ``None``: a slot) to the first live waiter."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(item)
                return True
        return False

    def slot_freed(self) -> None:
        """A counted connection closed (or a connect failed): its slot goes to the first
        waiter, or back to the pool."""
        if not (self._waiters and self._serve(None)):
            self._open -= 1

    def release(self, conn: UpstreamConnection, now: float = -1.0) -> None:
        """Return a connection after a complete exchange: to the first waiter, else to the
        idle stack; closes it if not reusable. ``now``: the loop time, when the caller has
        just read it (the task-free exchange passes the time of the response's last bytes:
        the upstream's own keep-alive timer started then)."""
        conn.finish()
        if not conn.reusable or self.closed_pool or self._max_idle == 0:
            conn.close()
            return
        if self._waiters and self._serve(conn):
            return
        if now < 0:
            now = conn.now()
        conn.idle_since = now
        top = self._top
        if top is None:
            # (max_idle >= 1 here)
            self._top = conn
            return
        idle = self._idle
        if len(idle) + 1 >= self._max_idle:
            # the bottom of the stack goes
            if idle:
                idle.pop(0).close()
            else:
                top.close()
                top = None
        if top is not None:
            idle.append(top)
        self._top = conn
        if idle and now - idle[0].idle_since > self._idle_timeout:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        keep = []
        for c in self.idle_stack():
            if now - c.idle_since > self._idle_timeout or c.closed:
                c.close()
            else:
                keep.append(c)
        self._top = keep.pop() if keep else None
        self._idle = keep

    def idle_stack(self) -> list[UpstreamConnection]:
        """The idle connections, bottom (oldest) first, top (the next to be taken) last:
        a new list."""
        top = self._top
        return [] if top is None else [*self._idle, top]

    @property
    def idle_count(self) -> int:
        return 0 if self._top is None else len(self._idle) + 1

    @property
    def open_count(self) -> int:
        """Connects in progress + open connections (what ``max_connections`` bounds)."""
        return self._open

    @property
    def waiting(self) -> int:
        """Requests queued for a connection."""
        return sum(1 for f in self._waiters if not f.done())

    def close(self) -> None:
        self.closed_pool = True
        idle = self.idle_stack()
        self._idle = []
        self._top = None
        for c in idle:
            c.close()
