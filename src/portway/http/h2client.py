"""HTTP/2 to upstreams (RFC 9113) on the ``h2`` library: h2c prior knowledge or TLS + ALPN.

:class:`H2Pool` (here) keeps, per target, a few multiplexed :class:`H2ClientConnection` objects: a
new stream goes on the first connection with room under the peer's
SETTINGS_MAX_CONCURRENT_STREAMS, and a second connection opens only when every one is full
(concurrent openers share one connect). Each :class:`H2Stream` is one request/response:

- request DATA is sent within the peer's stream and connection windows (``send`` waits for
  WINDOW_UPDATE) and the transport's write buffer (``pause_writing``);
- response DATA lands in :attr:`H2Stream.body`, a :class:`BodyStream` whose consumption
  returns flow-control credit, so a slow client holds back exactly one upstream stream;
- trailers become ``body.trailers`` before EOF;
- a stream the upstream never processed (RST_STREAM REFUSED_STREAM, or above a GOAWAY's
  last_stream_id) fails with :class:`StreamRefusedError`, which is always safe to retry.

Plain values only (no config models): host, port, TLS context and timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque

import h2.exceptions

from portway.http.exceptions import PoolOverflowError
from portway.http.h2conn import CONN_WINDOW as CONN_WINDOW
from portway.http.h2conn import STREAM_WINDOW as STREAM_WINDOW
from portway.http.h2conn import H2ClientConnection as H2ClientConnection
from portway.http.h2conn import H2Stream as H2Stream
from portway.http.h2conn import H2UpstreamError as H2UpstreamError
from portway.http.h2conn import StreamRefusedError as StreamRefusedError
from portway.http.h2conn import client_ssl_context as client_ssl_context


class H2Pool:
    """Multiplexed HTTP/2 connections to one ``host:port`` (see the module docstring).

    ``ssl_context`` None means h2c with prior knowledge. With TLS, a connection whose ALPN
    did not pick ``h2`` raises :class:`AlpnMismatchError` (``auto`` upstreams then use
    HTTP/1.1).

    ``max_connections`` (``None``: unlimited) bounds the connections open to the target,
    counted as the HTTP/1.1 pool counts them (a connect in progress included, a closing one
    until it is gone from :attr:`conns`). When every one is at the peer's
    SETTINGS_MAX_CONCURRENT_STREAMS and no other may open, a new stream waits its turn (FIFO)
    for room — a stream ending or a connection closing wakes the first waiter, who wakes the
    next if room is left — for ``queue_timeout`` at most; then, or at once when ``max_queue``
    are waiting, :class:`~portway.http.exceptions.PoolOverflowError`. A cancelled waiter
    leaves the queue and passes on a wakeup it was given."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        idle_timeout: float = 60.0,
        max_connections: int | None = None,
        queue_timeout: float = 1.0,
        max_queue: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.queue_timeout = queue_timeout
        self.max_queue = max_queue
        self.conns: list[H2ClientConnection] = []
        self._connecting: asyncio.Future[H2ClientConnection] | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: connections opened so far (tests and metrics)
        self.opened = 0
        #: streams that got no room (queue timeout or full queue)
        self.overflows = 0
        self.closed_pool = False

    async def open_stream(
        self, headers: list[tuple[bytes, bytes]], end: bool, connect_timeout: float
    ) -> H2Stream:
        """A new stream with ``headers`` sent, on a connection with room (or a new one)."""
        turn = not self._waiters  # FIFO: nobody overtakes a queued stream
        wait_until = -1.0
        while True:
            if self.closed_pool:
                raise H2UpstreamError("pool closed")
            if not turn:
                if wait_until < 0:
                    wait_until = asyncio.get_running_loop().time() + self.queue_timeout
                await self._wait_turn(wait_until, front=False)
                turn = True
            for c in self.conns:
                if c.capacity > 0:
                    try:
                        st = c.open_stream(headers, end)
                    except h2.exceptions.ProtocolError:
                        # h2 disagrees (stream ids exhausted, closing): no new streams here
                        c.draining = True
                        continue
                    if self._waiters and self._has_room():
                        self._wake()  # room is left: the next waiter's turn
                    return st
            fut = self._connecting
            if fut is None:
                if self.max_connections is not None and len(self.conns) >= self.max_connections:
                    # at the limit and every connection full: queue at the front (it is
                    # still this stream's turn when room appears)
                    if wait_until < 0:
                        wait_until = asyncio.get_running_loop().time() + self.queue_timeout
                    await self._wait_turn(wait_until, front=True)
                    continue
                fut = self._connecting = asyncio.get_running_loop().create_future()
                try:
                    conn = await self._connect(connect_timeout)
                except BaseException as e:
                    self._connecting = None
                    if isinstance(e, Exception):
                        fut.set_exception(e)
                        fut.exception()
                    else:
                        fut.cancel()
                    self._wake()  # a waiter may connect instead
                    raise
                self._connecting = None
                self.conns.append(conn)
                fut.set_result(conn)
            else:
                # somebody else is connecting: share that connection (it may fill up: loop)
                await asyncio.wait_for(asyncio.shield(fut), connect_timeout)

    async def _connect(self, timeout: float) -> H2ClientConnection:
        loop = asyncio.get_running_loop()
        conn_box: list[H2ClientConnection] = []

        def factory() -> H2ClientConnection:
            c = H2ClientConnection(loop, lambda: self._idle(c))
            conn_box.append(c)
            return c

        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                factory,
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl is not None else None,
            )
            conn = conn_box[0]
            if self.ssl is not None:
                sslobj = transport.get_extra_info("ssl_object")
                proto = sslobj.selected_alpn_protocol() if sslobj is not None else None
                if proto != "h2":
                    transport.close()
                    raise AlpnMismatchError(f"upstream negotiated {proto or 'no ALPN'}")
            # the peer's SETTINGS tell how many streams it takes: wait for them briefly
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.settled), min(timeout, 1.0))
        if conn.closed:
            raise ConnectionResetError("upstream closed the connection")
        self.opened += 1
        return conn

    def _has_room(self) -> bool:
        if any(c.capacity > 0 for c in self.conns):
            return True
        return self._connecting is None and (
            self.max_connections is None or len(self.conns) < self.max_connections
        )

    async def _wait_turn(self, until: float, front: bool) -> None:
        """Queue until :meth:`_wake` (room appeared), ``until`` (loop time) at most."""
        waiters = self._waiters
        if self.max_queue is not None and len(waiters) >= self.max_queue:
            self.overflows += 1
            raise PoolOverflowError(
                f"stream queue of {self.host}:{self.port} is full", waited=False
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if front:
            waiters.appendleft(fut)
        else:
            waiters.append(fut)
        try:
            async with asyncio.timeout_at(until):
                await fut
        except TimeoutError:
            if fut in waiters:
                waiters.remove(fut)
            if fut.done() and not fut.cancelled():
                self._wake()  # woken as the time ran out: the wakeup goes on
            self.overflows += 1
            raise PoolOverflowError(
                f"no stream to {self.host}:{self.port} within the queue timeout"
            ) from None
        except asyncio.CancelledError:
            if fut in waiters:
                waiters.remove(fut)
            elif fut.done() and not fut.cancelled():
                self._wake()
            raise

    def _wake(self) -> None:
        """Room appeared: the first waiter's turn."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _idle(self, c: H2ClientConnection) -> None:
        """``c`` has room: a stream ended, or it closed."""
        if c.closed:
            with contextlib.suppress(ValueError):
                self.conns.remove(c)
            self._wake()
            return
        if self._waiters:
            self._wake()  # the room goes to a queued stream, not to the idle timer
            return
        if c.streams:
            return
        # keep one idle connection; close extra idle ones (they were opened for a burst)
        idle = [x for x in self.conns if not x.streams and not x.closed]
        if len(idle) > 1 and c in idle:
            self.conns.remove(c)
            c.close()
        elif self.idle_timeout > 0 and c.reaper is None:
            # one timer per connection at a time (not one per request that left it idle)
            c.reaper = c.loop.call_later(self.idle_timeout, self._reap, c)

    def _reap(self, c: H2ClientConnection) -> None:
        c.reaper = None
        if c.closed:
            return
        idle_for = c.loop.time() - c.idle_since
        if c.streams or idle_for < self.idle_timeout - 0.001:
            # busy again since: look again when it may have been idle long enough
            wait = self.idle_timeout - (0.0 if c.streams else idle_for)
            c.reaper = c.loop.call_later(max(0.01, wait), self._reap, c)
            return
        with contextlib.suppress(ValueError):
            self.conns.remove(c)
        c.close()

    @property
    def live(self) -> int:
        return sum(1 for c in self.conns if not c.closed)

    def close(self) -> None:
        self.closed_pool = True
        for c in self.conns:
            c.close()
        self.conns.clear()


class AlpnMismatchError(ConnectionError):
    """TLS chose a protocol other than ``h2``."""
