"""One multiplexed HTTP/2 connection to an upstream and its streams (``h2`` library).

:class:`H2ClientConnection` is the ``asyncio.Protocol`` of one connection; :class:`H2Stream`
is one request/response on it (flow control, trailers, refused streams: see
:mod:`portway.http.h2client`, whose :class:`~portway.http.h2client.H2Pool` opens and shares
these connections). Split from ``h2client.py`` to keep modules small; every name here is
re-exported there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Final, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from portway.http.body import BodyStream
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
