"""HTTP/2 on the client side (RFC 9113): h2 framing in front of the request handler.

:class:`H2Connection` owns a client connection after the h2c preface or ALPN ``h2``. Each
stream becomes a :class:`Request` built with the same checks as ``ServerConnection`` and is
served by the same ``App`` in its own task; the app writes its response through the
per-stream :class:`_StreamWriter`, which implements the response-writer interface
(``ClientConnection.send_head``/``send_body``/``send_end``) as HEADERS/DATA frames. Request
DATA is acknowledged only as the handler consumes it (one slow upstream holds back one stream);
response DATA is sent within the peer's windows and ``drain()`` waits for WINDOW_UPDATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
from hyperframe.frame import GoAwayFrame

from portway.http.flow import adopt_transport
from portway.http.h2base import H2ServerBase, drain_live
from portway.http.h2guard import EagerFrameBuffer, ServerH2, goaway_bytes
from portway.http.server import App
from portway.http.streamreq import split_fields
from portway.http.streamserve import StreamRules, StreamWriter, serve_stream

log = logging.getLogger("portway.http.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: per-stream receive window: bounds the request body buffered per stream
_STREAM_WINDOW = 256 * 1024
#: connection receive window: large enough that one stalled stream never starves the others
_CONN_WINDOW = 4 * 1024 * 1024
_MAX_STREAMS = 128
#: what h2 raises when a stream (or the whole connection) can no longer carry frames
_GONE = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError)


#: live connections, for a graceful GOAWAY at shutdown (:func:`drain_connections`)
_LIVE: weakref.WeakSet[H2Connection] = weakref.WeakSet()


#: HTTP/2's reset codes for ``close()`` and ``abort()``; 4 bytes per field in a head's size
_RULES = StreamRules("2", h2.errors.ErrorCodes.CANCEL, h2.errors.ErrorCodes.INTERNAL_ERROR, 4)


class _StreamWriter(StreamWriter):
    """The response writer of one HTTP/2 stream (:class:`StreamWriter`, shared with HTTP/3)
    over h2: HEADERS through the connection, DATA within the peer's windows (:meth:`push`),
    ``drain()`` waits for WINDOW_UPDATE."""

    def __init__(self, conn: H2Connection, stream_id: int, method: str) -> None:
        super().__init__(_RULES, stream_id, method, conn.loop, dict(conn.extra), conn.alt_svc)
        self.h2conn = conn

    # --- the transport hooks --------------------------------------------------------------------
    def send_interim(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.h2conn.send_headers(self.stream_id, fields)

    def send_response(self, fields: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.h2conn.send_headers(self.stream_id, fields, end_stream)
        self.push()

    def send_reset(self, code: int) -> None:
        self.h2conn.reset_stream(self.stream_id, code)

    def conn_paused(self) -> bool:
        return self.h2conn._can_write is not None

    def conn_drain(self) -> Awaitable[None]:
        return self.h2conn.drain()

    def abandon_body(self) -> None:
        self.reset(h2.errors.ErrorCodes.NO_ERROR)

    def release(self) -> None:
        self.h2conn._forget(self.stream_id)

    def consume(self, n: int) -> None:
        self.h2conn._ack(self.stream_id, n)

    def send_error(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        c = self.h2conn
        c.send_headers(self.stream_id, headers)
        if not self.closed:
            self.head_sent = True
            self.out.append(body)
            self.eof_pending = True
            self.push()
            if self.task is None:
                b = self.body
                if b is not None and not b._eof and not self.closed:
                    self.abandon_body()
                if not self.out:
                    c._forget(self.stream_id)

    def push(self) -> None:
        c = self.h2conn
        out = self.out
        if self.closed or (self.ended and not out):
            c.flush_soon()
            return
        try:
            while out:
                window = min(
                    c.h2.local_flow_control_window(self.stream_id), c.h2.max_outbound_frame_size
                )
                if window <= 0:
                    break
                data = out[0]
                if len(data) <= window:
                    out.popleft()
                    c.h2.send_data(self.stream_id, data)
                else:
                    c.h2.send_data(self.stream_id, data[:window])
                    out[0] = data[window:]
            if not out and self.eof_pending and not self.ended:
                self.ended = True
                if self.trailers:
                    c.h2.send_headers(self.stream_id, self.trailers, end_stream=True)
                else:
                    c.h2.end_stream(self.stream_id)
        except _GONE:
            self.stream_gone()
        c.flush_soon()
        if not out:
            self.wake()
            if self.ended and self.task is None:
                c._forget(self.stream_id)


class H2Connection(H2ServerBase):
    """One HTTP/2 client connection; streams are served concurrently, each by ``app``."""

    def _engine_setup(self) -> None:
        """This engine's state (h2's state machine and settings): the end of ``__init__``."""
        self.streams: dict[int, _StreamWriter] = {}
        # what we send is already HTTP/2-shaped (``relay.stream_fields``: lower-case names, no
        # connection-specific fields; values came through llhttp or our own code, which
        # reject CR/LF/NUL), so h2's outbound checks would only repeat them per response;
        # everything received is still validated
        cfg = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = ServerH2(config=cfg)
        buf = EagerFrameBuffer(server=True)
        buf.max_header_block = max(2 * self.limits.max_header_bytes, 16 * 1024)
        self.h2.incoming_buffer = buf
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: _MAX_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_bytes,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )

    # --- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start HTTP/2 on ``transport``. The app's ``connection_opened`` is the caller's job
        (the connection began as a :class:`ServerConnection`, which already counted it)."""
        self.transport, self.peer_ip, self.peer_port, self.server_port = adopt_transport(transport)
        _LIVE.add(self)
        self.h2.clock = self.loop.time
        self.h2.control_at = self.loop.time()
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_CONN_WINDOW - 65535)
        self.flush()
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.streams_lost(self.streams.values())
            self.streams.clear()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            # h2 has queued a GOAWAY with the right error code; the events of this read are
            # dropped with it (no stream of a flood gets a task)
            if isinstance(e, h2.exceptions.DenialOfServiceError):
                log.warning("HTTP/2 %s from %s: connection closed", e, self.peer_ip)
            else:
                log.debug("HTTP/2 protocol error from %s: %s", self.peer_ip, e)
            self.flush()
            self.close()
            return
        self._receiving = True
        try:
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    self._on_request(ev)
                elif isinstance(ev, h2.events.DataReceived):
                    self._on_data(ev)
                elif isinstance(ev, h2.events.StreamEnded):
                    self._on_end(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    self._on_reset(ev.stream_id)
                elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                    for s in list(self.streams.values()):
                        if s.out:
                            s.push()
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.close()
        finally:
            self._receiving = False
        self.flush()

    # --- streams ----------------------------------------------------------------------------
    def _on_request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        if self.draining:
            # past our GOAWAY's last stream id: never processed, the client may retry it
            self.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self._cancel_idle()
        head = split_fields(ev.headers or (), self.underscores, self._owned)
        w = _StreamWriter(self, sid, head.raw_method.decode("latin-1"))
        self.streams[sid] = w
        # the rules of the HTTP/1.1 listener (http/streamreq.py, shared with HTTP/3); a
        # request they refuse is answered there
        req = self.open_stream(w, head, ev.stream_ended is not None)
        if req is not None:
            w.task = self.loop.create_task(serve_stream(self.app, w, req, log))

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        sid = ev.stream_id
        data = ev.data or b""
        flow = ev.flow_controlled_length or 0
        w = self.streams.get(sid)
        b = w.open_body() if w is not None else None
        if b is None:
            # nobody will read it: return the credit at once so other streams keep flowing
            self._ack(sid, flow)
            return
        if flow > len(data):
            self._ack(sid, flow - len(data))  # padding is never consumed by anyone
        if self.body_over_limit(b, len(data)):
            self._ack(sid, len(data))
            return
        if data:
            b.feed(data)

    def _on_end(self, sid: int) -> None:
        w = self.streams.get(sid)
        if w is not None:
            w.request_ended()

    def _on_reset(self, sid: int) -> None:
        w = self.streams.get(sid)
        if w is not None:
            w.peer_reset()

    def _forget(self, sid: int) -> None:
        w = self.streams.pop(sid, None)
        if w is not None and w.body is not None:
            # credit for bytes buffered but never read goes back to the connection window
            self._ack(sid, w.body._buffered)
        if not self.streams:
            if self.draining:
                self.flush()
                self.close()
            else:
                self._arm_idle()

    def _ack(self, sid: int, n: int) -> None:
        if n <= 0 or self.closed:
            return
        with contextlib.suppress(*_GONE):
            self.h2.acknowledge_received_data(n, sid)
        self.flush_soon()

    # --- frames out ------------------------------------------------------------------------------
    def send_headers(
        self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False
    ) -> None:
        try:
            self.h2.send_headers(sid, headers, end_stream=end_stream)
        except _GONE:
            w = self.streams.get(sid)
            if w is not None:
                w.stream_gone()
        self.flush_soon()

    def reset_stream(self, sid: int, code: int) -> None:
        with contextlib.suppress(*_GONE):
            self.h2.reset_stream(sid, code)
        self.flush_soon()

    def flush_soon(self) -> None:
        """Write what h2 queued once this loop iteration is over: the frames of every
        response completed in one iteration (HEADERS, DATA, END_STREAM of many streams) leave
        in one ``write`` instead of one per frame. Inside ``data_received`` the flush at its
        end covers it."""
        if self._flush_pending or self._receiving:
            return
        self._flush_pending = True
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        t = self.transport
        if data and t is not None and not t.is_closing():
            t.write(data)

    # --- lifecycle -------------------------------------------------------------------------------
    def begin_drain(self) -> None:
        if self.closed or self.draining:
            return
        self.draining = True
        self.flush()  # frames h2 already queued go first
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = self.h2.highest_inbound_stream_id
        goaway.error_code = 0
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(goaway.serialize())
        if not self.streams:
            self.close()

    def shutdown(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection()
        self.flush()
        self.close()

    def close(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            if self._flush_pending:
                self.flush()  # frames queued by this iteration go out before the FIN
            t.close()


def drain_connections(app: App | None = None) -> int:
    """:meth:`H2Connection.begin_drain` on every live connection (of ``app`` when given: tests
    run several gateways in one process); returns how many there were. The worker calls it
    when it stops accepting."""
    return drain_live(_LIVE, app)


__all__ = ["PREFACE", "H2Connection", "drain_connections", "goaway_bytes"]
