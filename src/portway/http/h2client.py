"""HTTP/2 to upstreams (RFC 9113) on the ``h2`` library: h2c prior knowledge or TLS + ALPN.

:class:`H2Pool` keeps, per target, a few multiplexed :class:`H2ClientConnection` objects: a
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
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from portway.http.body import BodyStream
from portway.http.exceptions import PoolOverflowError
from portway.http.headers import Headers

log: Final = logging.getLogger("portway.http.h2client")

#: our receive window per stream: bounds what one response buffers before its reader catches up
STREAM_WINDOW: Final = 1024 * 1024
#: connection receive window: large enough that one stalled stream never starves the others
CONN_WINDOW: Final = 16 * 1024 * 1024
_GONE: Final = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError)


class H2UpstreamError(ConnectionError):
    """The stream failed. ``processed`` is False when the upstream certainly did not act on
    it (safe to send again, whatever the method)."""

    processed = True


class StreamRefusedError(H2UpstreamError):
    """REFUSED_STREAM, or a stream above a GOAWAY's last_stream_id (RFC 9113 §8.7)."""

    processed = False


def client_ssl_context(alpn: list[str]) -> ssl.SSLContext:
    """The TLS context for upstream HTTP/2: system trust, hostname checks, ``alpn``.

    The one place that builds it, so per-upstream ``tls:`` settings can replace it."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(alpn)
    return ctx


class _ResponseBody(BodyStream):
    """A response body whose consumption acknowledges the DATA to the upstream."""

    __slots__ = ("_ack",)

    def __init__(self, ack: Callable[[int], None]) -> None:
        super().__init__()
        self._ack = ack

    def _pop(self) -> bytes:
        chunk = super()._pop()
        self._ack(len(chunk))
        return chunk


class H2Stream:
    """One request/response exchange on an :class:`H2ClientConnection`.

    ``head`` resolves to ``(status, headers)`` (or fails with :class:`H2UpstreamError`);
    ``ended`` becomes True when the upstream finished its side (END_STREAM or reset)."""

    def __init__(self, conn: H2ClientConnection, sid: int) -> None:
        self.conn = conn
        self.id = sid
        loop = conn.loop
        self.head: asyncio.Future[tuple[int, Headers]] = loop.create_future()
        self.body = _ResponseBody(self._ack)
        self.ended = False  # remote side closed
        self.sent_end = False  # local side closed
        self.reset_code: int | None = None
        #: when set, a failure after the head ends the body with these trailers instead of
        #: an error (gRPC: the client then sees a status, not a reset)
        self.fail_trailers: Headers | None = None
        self._window: asyncio.Future[None] | None = None

    # --- sending ------------------------------------------------------------------------------
    async def send(self, data: bytes, end: bool = False) -> None:
        """Send ``data`` as DATA frames within the flow-control windows; ``end`` closes our
        side. Raises :class:`H2UpstreamError` if the stream or connection went away."""
        c = self.conn
        view = memoryview(data)
        while view:
            self._check()
            try:
                room = min(c.h2.local_flow_control_window(self.id), c.h2.max_outbound_frame_size)
            except _GONE:
                raise H2UpstreamError("upstream stream closed") from None
            if room <= 0:
                self._window = c.loop.create_future()
                await self._window
                continue
            part, view = view[:room], view[room:]
            try:
                c.h2.send_data(self.id, part.tobytes(), end_stream=end and not view)
            except _GONE:
                raise H2UpstreamError("upstream stream closed") from None
            c.flush()
            await c.drain()
        if end:
            if not data:
                self._check()
                try:
                    c.h2.end_stream(self.id)
                except _GONE:
                    raise H2UpstreamError("upstream stream closed") from None
                c.flush()
            self.sent_end = True
            if self.ended:
                c.forget(self.id)

    def _check(self) -> None:
        if self.reset_code is not None or self.conn.closed:
            raise H2UpstreamError("upstream stream reset")

    def _wake(self) -> None:
        w, self._window = self._window, None
        if w is not None and not w.done():
            w.set_result(None)

    def cancel(self, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Reset the stream (the client went away, a deadline passed) unless it is over."""
        if not (self.ended and self.sent_end) and self.reset_code is None:
            self.conn.reset(self.id, code)
        self._fail(H2UpstreamError("stream cancelled"))

    # --- receiving ----------------------------------------------------------------------------
    def _ack(self, n: int) -> None:
        self.conn.ack(self.id, n)

    def _fail(self, exc: H2UpstreamError) -> None:
        if self.reset_code is None:
            self.reset_code = -1
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: the waiter may be gone
        elif not self.ended:
            if self.fail_trailers is not None:
                self.body.trailers = self.fail_trailers
                self.body.feed_eof()
            else:
                self.body.set_exception(exc)
        self.ended = True
        self._wake()
        self.conn.forget(self.id)


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection to an upstream; many concurrent :class:`H2Stream`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_free: Callable[[], None]) -> None:
        """``on_free`` is called whenever room appears: a stream ended, or the connection
        closed (the pool then drops it, closes it when idle, or serves a waiter)."""
        self.loop = loop
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 256 * 1024,
            },
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.closed = False
        #: a GOAWAY arrived (or we are closing): no new streams
        self.draining = False
        self.settled: asyncio.Future[None] = loop.create_future()
        self._paused: asyncio.Future[None] | None = None
        self._flush_pending = False
        #: the pool's idle-timeout timer for this connection, if armed
        self.reaper: asyncio.TimerHandle | None = None
        self._on_free = on_free
        self.idle_since = loop.time()

    # --- capacity -------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Streams that may still open on this connection now."""
        if self.closed or self.draining:
            return 0
        limit = self.h2.remote_settings.max_concurrent_streams
        return max(0, limit - len(self.streams))

    def open_stream(self, headers: list[tuple[bytes, bytes]], end: bool) -> H2Stream:
        """Send HEADERS for a new stream (synchronously: stream ids are in order)."""
        sid = self.h2.get_next_available_stream_id()
        st = H2Stream(self, sid)
        self.h2.send_headers(sid, headers, end_stream=end)  # raises before registering
        self.streams[sid] = st
        st.sent_end = end
        self.flush()
        return st

    # --- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONN_WINDOW - 65535)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.reaper is not None:
            self.reaper.cancel()
            self.reaper = None
        if not self.settled.done():
            self.settled.set_exception(ConnectionResetError("upstream closed the connection"))
            self.settled.exception()
        for st in list(self.streams.values()):
            st._fail(H2UpstreamError("upstream connection lost"))
        self.streams.clear()
        p = self._paused
        if p is not None and not p.done():
            p.set_result(None)
        self._on_free()

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = self.loop.create_future()

    def resume_writing(self) -> None:
        p, self._paused = self._paused, None
        if p is not None and not p.done():
            p.set_result(None)

    async def drain(self) -> None:
        p = self._paused
        if p is not None:
            await p

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            # frames arriving after our GOAWAY (a PING, late DATA) are no news
            level = logging.DEBUG if self.draining else logging.WARNING
            log.log(level, "HTTP/2 protocol error from upstream: %s", e)
            self.flush()
            self.close()
            return
        for ev in events:
            self._event(ev)
        self.flush()

    def _event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            st = self.streams.get(ev.stream_id or 0)
            if st is not None and not st.head.done():
                status = 0
                fields: list[tuple[bytes, bytes]] = []
                for k, v in ev.headers or ():
                    if k == b":status":
                        status = int(v)
                    elif not k.startswith(b":"):
                        fields.append((bytes(k), bytes(v)))
                st.head.set_result((status, Headers(fields)))
        elif isinstance(ev, h2.events.DataReceived):
            sid = ev.stream_id or 0
            st = self.streams.get(sid)
            data = ev.data or b""
            flow = ev.flow_controlled_length or 0
            if st is None or st.ended:
                self.ack(sid, flow)
                return
            if flow > len(data):
                self.ack(sid, flow - len(data))  # padding: never read by anyone
            if data:
                st.body.feed(data)
        elif isinstance(ev, h2.events.TrailersReceived):
            st = self.streams.get(ev.stream_id or 0)
            if st is not None:
                st.body.trailers = Headers([(bytes(k), bytes(v)) for k, v in ev.headers or ()])
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.streams.get(ev.stream_id or 0)
            if st is not None:
                if not st.head.done():
                    st._fail(H2UpstreamError("upstream ended the stream without a response"))
                    return
                st.ended = True
                st.body.feed_eof()
                if st.sent_end:
                    self.forget(st.id)
        elif isinstance(ev, h2.events.StreamReset):
            st = self.streams.get(ev.stream_id or 0)
            if st is not None:
                code = ev.error_code
                refused = code == h2.errors.ErrorCodes.REFUSED_STREAM and not st.head.done()
                err = (
                    StreamRefusedError("upstream refused the stream")
                    if refused
                    else H2UpstreamError(f"upstream reset the stream ({code!s})")
                )
                st._fail(err)
                st.reset_code = int(code or 0)
        elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            if isinstance(ev, h2.events.RemoteSettingsChanged) and not self.settled.done():
                self.settled.set_result(None)
            sid = getattr(ev, "stream_id", 0) or 0
            if sid and sid in self.streams:
                self.streams[sid]._wake()
            else:
                for st in list(self.streams.values()):
                    st._wake()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self._goaway(ev.last_stream_id or 0)

    def _goaway(self, last_id: int) -> None:
        """No new streams; those above ``last_id`` were never processed (safe to retry)."""
        self.draining = True
        for sid, st in list(self.streams.items()):
            if sid > last_id:
                st._fail(StreamRefusedError("upstream sent GOAWAY before processing the stream"))
        if not self.streams:
            self.close()

    # --- helpers ----------------------------------------------------------------------------------
    def ack(self, sid: int, n: int) -> None:
        if n <= 0 or self.closed:
            return
        with contextlib.suppress(*_GONE):
            self.h2.acknowledge_received_data(n, sid)
        self.flush()

    def reset(self, sid: int, code: int) -> None:
        with contextlib.suppress(*_GONE):
            self.h2.reset_stream(sid, code)
        self.flush()

    def forget(self, sid: int) -> None:
        if self.streams.pop(sid, None) is None:
            return
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.draining:
                self.close()
        self._on_free()

    def flush(self) -> None:
        """Write what h2 queued, once per loop iteration: HEADERS, DATA and END_STREAM of
        one request (and acknowledgements) leave in one ``write`` — each write can cost a
        wakeup of the peer, far more than the frames themselves."""
        if not self._flush_pending and self.transport is not None:
            self._flush_pending = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        t = self.transport
        if data and t is not None and not t.is_closing():
            t.write(data)

    def close(self) -> None:
        """GOAWAY and close (streams still open fail)."""
        self.draining = True
        t = self.transport
        if t is not None and not t.is_closing():
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
            self._flush_now()
            t.close()


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
