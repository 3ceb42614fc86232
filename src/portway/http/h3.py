"""HTTP/3 on the client side (RFC 9114): aioquic's QUIC and H3 framing in front of the handler.

:class:`H3Protocol` is one QUIC connection of a listener's UDP endpoint (``server/quic.py``).
Each request stream becomes a :class:`Request` built by the rules HTTP/2 uses
(``http/streamreq.py``: field split, limits, ``http/validate.py``, target and authority
checks) with ``version="3"``, and is served by the same ``App`` in its own task. The app
writes through the per-stream :class:`_StreamWriter`, which implements the response-writer
interface (``send_info``/``send_head``/``send_body``/``send_end``/``abort``) as H3 HEADERS
and DATA frames, connection-specific fields dropped by the relay's hop-by-hop set.

Flow control is aioquic's: it raises the client's stream credit as data *arrives*, not as the
handler reads it, so an HTTP/3 request body is bounded by ``limits.max_body_bytes`` rather
than by a window (docs/tls.md). Response data is buffered by aioquic until acknowledged;
``drain()`` waits while more than :data:`_HIGH` bytes of a stream are unacknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any, cast

from aioquic import tls as aioquic_tls
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamReset,
)

from portway.errors import PayloadTooLargeError
from portway.http.forwarded import TrustedProxies
from portway.http.limits import ServerLimits
from portway.http.server import App, ClientDisconnectedError
from portway.http.streamreq import split_fields
from portway.http.streamserve import StreamRules, StreamWriter, open_request, serve_stream

log = logging.getLogger("portway.http.h3")

#: unacknowledged response bytes per stream above which ``drain()`` waits
_HIGH = 256 * 1024

#: live connections, for a graceful GOAWAY at shutdown
_LIVE: weakref.WeakSet[H3Protocol] = weakref.WeakSet()


#: ``choose(server_name)``: the (certificate, chain, private key) a handshake serves, or
#: ``None`` for the configuration's
CertificateChooser = Callable[[str | None], tuple[Any, list[Any], Any] | None]


class _SniContext(aioquic_tls.Context):
    """aioquic's TLS context, choosing the certificate by the ClientHello's server name.

    aioquic reads the certificate from the context while it answers the ClientHello and has
    no callback before that; this subclass peeks at the ClientHello (the buffer is rewound)
    and sets the certificate first, so the signature algorithm is negotiated for its key."""

    choose: CertificateChooser

    def _server_handle_hello(self, input_buf: Any, initial_buf: Any, handshake_buf: Any) -> None:
        start = input_buf.tell()
        try:
            name = aioquic_tls.pull_client_hello(input_buf).server_name
        except Exception:  # malformed: aioquic's own parse below reports it
            name = None
        finally:
            input_buf.seek(start)
        chosen = self.choose(name)
        if chosen is not None:
            self.certificate, self.certificate_chain, self.certificate_private_key = chosen
        super()._server_handle_hello(input_buf, initial_buf, handshake_buf)


def choose_certificate_by_sni(quic: QuicConnection, choose: CertificateChooser) -> bool:
    """Make the server connection ``quic`` pick its certificate with ``choose``. aioquic
    creates the TLS context at the first datagram (``_initialize``), so the hook goes there.
    Returns False, leaving the configuration's certificate, when aioquic's internals differ."""
    initialize = getattr(quic, "_initialize", None)
    if initialize is None or not hasattr(aioquic_tls.Context, "_server_handle_hello"):
        return False

    def hooked(peer_cid: bytes) -> None:
        initialize(peer_cid)
        ctx = getattr(quic, "tls", None)
        if type(ctx) is aioquic_tls.Context:
            ctx.__class__ = _SniContext
            cast(_SniContext, ctx).choose = choose

    setattr(quic, "_initialize", hooked)  # noqa: B010 (an instance attribute, not a method)
    return True


#: HTTP/3's codes for ``close()`` (H3_REQUEST_CANCELLED) and ``abort()`` (H3_INTERNAL_ERROR);
#: a head's size counts 32 bytes per field (as QPACK's table does)
_RULES = StreamRules("3", ErrorCode.H3_REQUEST_CANCELLED, ErrorCode.H3_INTERNAL_ERROR, 32)


class _StreamWriter(StreamWriter):
    """The response writer of one HTTP/3 stream (:class:`StreamWriter`, shared with
    HTTP/2): HEADERS and DATA go to aioquic at once (it buffers them until acknowledged);
    ``drain()`` waits while more than :data:`_HIGH` bytes are unacknowledged."""

    def __init__(self, conn: H3Protocol, stream_id: int, method: str) -> None:
        super().__init__(_RULES, stream_id, method, conn.loop, {})
        self.h3conn = conn
        #: the listener's name (BFF profiles may match on it)
        self.listener = conn.listener

    # --- the transport hooks --------------------------------------------------------------------
    def send_interim(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.h3conn.send_headers(self.stream_id, fields)

    def send_response(self, fields: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.h3conn.send_headers(self.stream_id, fields, end_stream)
        if not end_stream:
            self.push()

    def push(self) -> None:
        c = self.h3conn
        out = self.out
        while out:
            data = bytes(out.popleft())
            last = not out and self.eof_pending and not self.trailers
            c.send_data(self.stream_id, data, last)
            if last:
                self.ended = True
        if self.eof_pending and not self.ended and not self.closed:
            self.ended = True
            if self.trailers:
                c.send_headers(self.stream_id, self.trailers, True)
            else:
                c.send_data(self.stream_id, b"", True)

    def send_reset(self, code: int) -> None:
        self.h3conn.reset_stream(self.stream_id, code)

    def backlogged(self) -> bool:
        return self.h3conn.unacked(self.stream_id) > _HIGH

    def abandon_body(self) -> None:
        self.h3conn.stop_stream(self.stream_id, ErrorCode.H3_NO_ERROR)
        b = self.body
        if b is not None:
            b.set_exception(ClientDisconnectedError("request body abandoned"))

    def release(self) -> None:
        self.h3conn._forget(self.stream_id)

    def send_error(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        c = self.h3conn
        c.send_headers(self.stream_id, headers)
        self.head_sent = True
        if not self.closed:
            c.send_data(self.stream_id, body, True)
            self.ended = True
            b = self.body
            if b is not None and not b._eof:
                c.stop_stream(self.stream_id, ErrorCode.H3_NO_ERROR)
        c._forget(self.stream_id)


class H3Protocol(QuicConnectionProtocol):
    """One QUIC connection speaking HTTP/3; request streams are served concurrently by
    ``app``. Built by aioquic's ``QuicServer`` (``create_protocol``) with the listener's
    settings bound by ``functools.partial``."""

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: Any = None,
        *,
        app: App,
        limits: ServerLimits,
        trusted: TrustedProxies | None,
        listener: str = "",
        server_port: int = 0,
        underscores: bool | None = False,
        choose: CertificateChooser | None = None,
    ) -> None:
        super().__init__(quic, stream_handler)
        if choose is not None:
            choose_certificate_by_sni(quic, choose)
        #: the listener's ``underscores_in_headers`` (see ``http/owned.py``)
        self.underscores = underscores
        self.app = app
        self.limits = limits
        self.trusted = trusted
        self.listener = listener
        self.server_port = server_port
        self.loop = asyncio.get_running_loop()
        self.h3: H3Connection | None = None
        self.streams: dict[int, _StreamWriter] = {}
        self.peer_ip, self.peer_port = "", 0
        self.opened = False
        self.closed = False
        #: GOAWAY sent: open streams complete, new ones are refused
        self.draining = False
        self._highest = -1
        self._tx: asyncio.Handle | None = None
        #: while draining: streams whose response aioquic still holds unacknowledged (closing
        #: the connection would drop it)
        self._unflushed: set[int] = set()

    # --- datagrams and QUIC events -------------------------------------------------------------
    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        if not self.peer_ip:
            self.peer_ip, self.peer_port = str(addr[0]), int(addr[1])
        super().datagram_received(data, addr)
        # acknowledgements arrive in datagrams: writers waiting on them may go on
        for w in self.streams.values():
            if w._waiter is not None and not w.backlogged():
                w.wake()
        if self.draining:
            self._close_when_flushed()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            if event.alpn_protocol == "h3" and self.h3 is None:
                self.h3 = H3Connection(self._quic)
                self.opened = True
                _LIVE.add(self)
                self.app.connection_opened()
        elif isinstance(event, (StreamReset, StopSendingReceived)):
            self._on_reset(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            self._terminated()
            return
        if self.h3 is not None:
            for ev in self.h3.handle_event(event):
                self._h3_event(ev)

    def _h3_event(self, ev: H3Event) -> None:
        if isinstance(ev, HeadersReceived):
            w = self.streams.get(ev.stream_id)
            if w is None:
                if ev.stream_id > self._highest:  # a new request (ids only grow)
                    self._on_request(ev)
                # else: trailers of a request already answered and forgotten
            elif ev.stream_ended:  # request trailers: not forwarded (as on HTTP/2)
                w.request_ended()
        elif isinstance(ev, DataReceived):
            self._on_data(ev)

    # --- streams ------------------------------------------------------------------------------
    def _on_request(self, ev: HeadersReceived) -> None:
        sid = ev.stream_id
        self._highest = max(self._highest, sid)
        if self.draining:
            # past our GOAWAY: never processed, the client may retry it elsewhere
            self.reset_stream(sid, ErrorCode.H3_REQUEST_REJECTED)
            self.stop_stream(sid, ErrorCode.H3_REQUEST_REJECTED)
            return
        head = split_fields(ev.headers, self.underscores, self.app.owned_headers)
        w = _StreamWriter(self, sid, head.raw_method.decode("latin-1"))
        self.streams[sid] = w
        # the rules of the HTTP/1.1 listener (http/streamreq.py, shared with HTTP/2); a
        # request they refuse is answered there
        req = open_request(
            w,
            head,
            ev.stream_ended,
            self.limits,
            self.trusted,
            scheme="https",
            peer=(self.peer_ip, self.peer_port),
            server_port=self.server_port,
            log=log,
        )
        if req is not None:
            w.task = self.loop.create_task(serve_stream(self.app, w, req, log))

    def _on_data(self, ev: DataReceived) -> None:
        w = self.streams.get(ev.stream_id)
        b = w.open_body() if w is not None else None
        if b is None:
            return
        limit = self.limits.max_body_bytes
        if limit is not None and b.received + len(ev.data) > limit:
            b.set_exception(PayloadTooLargeError("request body too large"))
            self.stop_stream(ev.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            return
        if ev.data:
            b.feed(ev.data)
        if ev.stream_ended:
            b.feed_eof()

    def _on_reset(self, sid: int) -> None:
        w = self.streams.get(sid)
        if w is not None:
            w.peer_reset()

    def _forget(self, sid: int) -> None:
        self.streams.pop(sid, None)
        if self.draining:
            self._unflushed.add(sid)
            self._close_when_flushed()

    def _close_when_flushed(self) -> None:
        """Draining: close (H3_NO_ERROR) once no stream is open and the client acknowledged
        every response byte (a CONNECTION_CLOSE makes aioquic drop what it still holds)."""
        if self.closed or self.streams:
            return
        self._unflushed = {s for s in self._unflushed if self.unacked(s) > 0}
        if self._unflushed:
            self.transmit_soon()  # checked again as acknowledgements arrive
        else:
            self.close(error_code=ErrorCode.H3_NO_ERROR)

    def _terminated(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._tx is not None:
            self._tx.cancel()
            self._tx = None
        for w in list(self.streams.values()):
            w.lost()
        self.streams.clear()
        _LIVE.discard(self)
        if self.opened:
            self.app.connection_closed()

    # --- frames out ---------------------------------------------------------------------------
    def unacked(self, sid: int) -> int:
        """Response bytes of stream ``sid`` aioquic holds until the client acknowledges them
        (0 when aioquic's internals differ: no back-pressure then, never a stall)."""
        stream = getattr(self._quic, "_streams", {}).get(sid)
        buf = getattr(getattr(stream, "sender", None), "_buffer", None)
        return len(buf) if buf is not None else 0

    def send_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool = False) -> None:
        if self.h3 is None or self.closed:
            return
        try:
            self.h3.send_headers(sid, headers, end_stream=end)
        except Exception as e:  # the stream is finished or reset: nothing more to say on it
            log.debug("HTTP/3 HEADERS on stream %d not sent: %s", sid, e)
            self._stream_failed(sid)
        self.transmit_soon()

    def send_data(self, sid: int, data: bytes, end: bool) -> None:
        if self.h3 is None or self.closed:
            raise ClientDisconnectedError("client disconnected")
        try:
            self.h3.send_data(sid, data, end_stream=end)
        except Exception as e:
            log.debug("HTTP/3 DATA on stream %d not sent: %s", sid, e)
            self._stream_failed(sid)
        self.transmit_soon()

    def _stream_failed(self, sid: int) -> None:
        w = self.streams.get(sid)
        if w is not None:
            w.stream_gone()

    def reset_stream(self, sid: int, code: int) -> None:
        if self.closed:
            return
        try:
            self._quic.reset_stream(sid, code)
        except Exception as e:  # already finished or reset
            log.debug("HTTP/3 stream %d not reset: %s", sid, e)
        self.transmit_soon()

    def stop_stream(self, sid: int, code: int) -> None:
        if self.closed:
            return
        try:
            self._quic.stop_stream(sid, code)
        except Exception as e:  # the request side already ended
            log.debug("HTTP/3 stream %d not stopped: %s", sid, e)
        self.transmit_soon()

    def transmit_soon(self) -> None:
        """One ``transmit()`` for everything the handlers queued in this loop iteration."""
        if self._tx is None and not self.closed:
            self._tx = self.loop.call_soon(self._transmit_now)

    def _transmit_now(self) -> None:
        self._tx = None
        if not self.closed:
            self.transmit()

    # --- lifecycle ----------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Graceful GOAWAY (RFC 9114 §5.2): streams up to the last one received are served,
        later ones refused; the connection closes (H3_NO_ERROR) when the last one ends."""
        if self.closed or self.draining:
            return
        self.draining = True
        h3 = self.h3
        control = getattr(h3, "_local_control_stream_id", None)
        if control is not None:
            # aioquic has no server GOAWAY call: the frame goes on our control stream
            goaway = encode_frame(
                FrameType.GOAWAY, encode_uint_var(self._highest + 4 if self._highest >= 0 else 0)
            )
            self._quic.send_stream_data(control, goaway)
            self.transmit()
        self._close_when_flushed()


def drain_connections(app: App | None = None) -> int:
    """:meth:`H3Protocol.begin_drain` on every live connection (of ``app`` when given);
    returns how many there were."""
    conns = [c for c in _LIVE if not c.closed and (app is None or c.app is app)]
    for c in conns:
        c.begin_drain()
    return len(conns)


__all__ = [
    "CertificateChooser",
    "H3Protocol",
    "choose_certificate_by_sni",
    "drain_connections",
]
