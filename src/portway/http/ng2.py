"""HTTP/2 on the client side, on libnghttp2 (``http/ng2lib.py``): the fast server engine.

:class:`NgConnection` is a drop-in for :class:`portway.http.h2.H2Connection` (same
constructor, same lifecycle methods, same per-stream response writer, same limits); only
the framing, HPACK and the protocol's state machines run in C. ``data_received`` hands the
bytes to ``nghttp2_session_mem_recv``, whose callbacks (below) collect each request's
fields and body; everything nghttp2 has to send then leaves in one ``transport.write``
(``nghttp2_session_mem_send`` drained into one buffer). Responses are submitted with a data
provider whose read callback copies from the stream's queue, so DATA follows the peer's
windows without Python bookkeeping.

Callbacks (``http/ng2cb.py``) find their connection in ``ng2cb.cur``, set around every call into
nghttp2 that may call back (``mem_recv``/``mem_send``): cheaper than a cffi handle per call,
and safe because nothing inside a callback calls back into nghttp2's receive or send path.

Kept from ``h2guard``, because nghttp2 ends these with other codes or not at all: the
CONTINUATION bounds, the rapid-reset budget and the PING/SETTINGS token bucket, counted
per frame header (``on_begin_frame``) and ending the connection with
GOAWAY(ENHANCE_YOUR_CALM). Request DATA is acknowledged only as the handler consumes it
(``no_auto_window_update`` + ``nghttp2_session_consume``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, Final

from portway.http import ng2cb as cb
from portway.http import ng2lib as L
from portway.http.flow import adopt_transport
from portway.http.forwarded import ForwardMemo
from portway.http.h2base import H2ServerBase, drain_live
from portway.http.h2engine import (
    CONTROL_BURST,
    CONTROL_PER_SECOND,
    MAX_CONTINUATIONS,
    PREMATURE_RESETS,
)
from portway.http.ng2stream import NgStream
from portway.http.server import App
from portway.http.streamreq import split_fields
from portway.http.streamserve import serve_stream

log = logging.getLogger("portway.http.h2")

_loaded = L.load()
if _loaded is None:  # pragma: no cover - h2engine imports this module only when it loaded
    raise ImportError("libnghttp2 is not available")
ffi: Any = _loaded[0]
lib: Any = _loaded[1]

#: per-stream receive window: bounds the request body buffered per stream
_STREAM_WINDOW: Final = 256 * 1024
#: connection receive window: large enough that one stalled stream never starves the others
_CONN_WINDOW: Final = 4 * 1024 * 1024
_MAX_STREAMS: Final = 128

#: live connections, for a graceful GOAWAY at shutdown (:func:`drain_connections`); a plain
#: set (left in ``connection_lost``) because mypyc-compiled classes take no weak references
_LIVE: set[NgConnection] = set()


#: bytes of one ``nghttp2_nv`` (two pointers, two lengths, the flags byte padded to 8)
_NV_SIZE: Final = 40
#: ``struct.pack`` of ``n`` ``nghttp2_nv`` (five u64 each), by ``n``
_NV_PACK: Final[dict[int, Any]] = {}
# (bound once: a call through a module global, not an attribute lookup on ``ffi``/``lib``)
_memmove: Any = ffi.memmove
_unpack: Any = ffi.unpack
_mem_send: Any = lib.nghttp2_session_mem_send
_submit_response: Any = lib.nghttp2_submit_response


def _nv_bytes(fields: list[tuple[bytes, bytes]], base: int) -> bytes:
    """``fields`` as the bytes of an ``nghttp2_nv`` array followed by every name and value,
    for a buffer at address ``base``: one copy into C memory (``ffi.memmove``) instead of a
    cdata per buffer and per array (nghttp2 copies the fields at the submit call)."""
    n = len(fields)
    at = base + _NV_SIZE * n
    vals: list[int] = []
    parts: list[bytes] = [b""]  # (the array, once packed)
    for k, v in fields:
        nk, nv = len(k), len(v)
        vals.append(at)
        vals.append(at + nk)
        vals.append(nk)
        vals.append(nv)
        vals.append(0)
        parts.append(k)
        parts.append(v)
        at += nk + nv
    pack = _NV_PACK.get(n)
    if pack is None:
        pack = struct.Struct(f"={5 * n}Q").pack
        if n <= 64:
            _NV_PACK[n] = pack
    parts[0] = pack(*vals)
    return b"".join(parts)


class NgConnection(H2ServerBase):
    """One HTTP/2 client connection on libnghttp2; streams are served concurrently by
    ``app``, one task per stream (none for a request answered before the handler)."""

    def _engine_setup(self) -> None:
        """This engine's state (the session, what its callbacks collect, the flood
        counters): the end of ``__init__``."""
        self.streams: dict[int, NgStream] = {}
        # header block being received: its stream and fields (None: not a request head)
        self._hsid = 0
        self._last_sid = 0
        self._hdrs: list[tuple[bytes, bytes]] | None = None
        #: our rules check every field of every block: the loaded libnghttp2's session
        #: failed the self-check of its field validation (``ng2cb.fields_validated``)
        self._hcheck = not cb.fields_validated
        #: our rules check every field of that block: one failed nghttp2's checks (it is
        #: kept, ours judge it), or ``_hcheck``
        self._hbad = self._hcheck
        # flood accounting (see h2engine's limits)
        self._calm = ""
        self._cont = 0
        self._cont_bytes = 0
        self._max_block = max(2 * self.limits.max_header_bytes, 16 * 1024)
        self._opened = 0
        self._resets = 0
        self._tokens = CONTROL_BURST
        self._token_at = 0.0
        #: streams to reset (NO_ERROR) once their response's last DATA is serialized
        self.pending_rst: list[int] = []
        #: C memory the fields of a submitted head are copied into (``_nv``), grown on need
        self._nv_buf: Any = None
        self._nv_ptr: Any = None
        self._nv_base = 0
        self._nv_cap = 0
        self._out_ptr = ffi.new("const char **")
        self._memo: ForwardMemo | None = None
        sp = ffi.new("nghttp2_session **")
        rv = lib.nghttp2_session_server_new2(sp, cb.CALLBACKS, ffi.NULL, cb.OPTION)
        if rv != 0:
            raise MemoryError("nghttp2_session_server_new2 failed")
        self.session: Any = ffi.gc(sp[0], lib.nghttp2_session_del)

    @property
    def forward_memo(self) -> ForwardMemo:
        """This connection's memo of added X-Forwarded-*/Via bytes (the task-free path's
        ``forward_header_lines``), made on first use."""
        m = self._memo
        if m is None:
            m = self._memo = ForwardMemo()
        return m

    # --- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start HTTP/2 on ``transport`` (the app's ``connection_opened`` is the caller's)."""
        self.transport, self.peer_ip, self.peer_port, self.server_port = adopt_transport(transport)
        _LIVE.add(self)
        self._token_at = self.loop.time()
        iv = ffi.new(
            "nghttp2_settings_entry[4]",
            [
                (L.SETTINGS_MAX_CONCURRENT_STREAMS, _MAX_STREAMS),
                (L.SETTINGS_INITIAL_WINDOW_SIZE, _STREAM_WINDOW),
                (L.SETTINGS_MAX_HEADER_LIST_SIZE, self.limits.max_header_bytes),
                (L.SETTINGS_ENABLE_PUSH, 0),
            ],
        )
        lib.nghttp2_submit_settings(self.session, 0, iv, 4)
        lib.nghttp2_session_set_local_window_size(self.session, 0, 0, _CONN_WINDOW)
        self.flush()
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            _LIVE.discard(self)
            self.streams_lost(self.streams.values())
            self.streams.clear()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        prev, cb.cur = cb.cur, self
        self._receiving = True
        try:
            rv = lib.nghttp2_session_mem_recv(self.session, data, len(data))
        finally:
            cb.cur = prev
            self._receiving = False
        if rv < 0:
            self._fail(rv)
            return
        self.flush()

    def _fail(self, rv: int) -> None:
        """``mem_recv`` failed: a flood (our GOAWAY ENHANCE_YOUR_CALM) or a protocol error
        nghttp2 already answered with GOAWAY (else PROTOCOL_ERROR); then close."""
        last = lib.nghttp2_session_get_last_proc_stream_id(self.session)
        if rv == L.ERR_TOO_MANY_CONTINUATIONS and not self._calm:
            # nghttp2's own bound (builds with the CVE-2024-28182 fix; 8 frames by default)
            self._calm = "CONTINUATION flood"
        elif rv == L.ERR_FLOODED and not self._calm:
            self._calm = "control frame flood"  # answers it could not send out
        if self._calm:
            log.warning("HTTP/2 %s from %s: connection closed", self._calm, self.peer_ip)
            lib.nghttp2_session_terminate_session2(self.session, last, L.ENHANCE_YOUR_CALM)
        else:
            err = ffi.string(lib.nghttp2_strerror(rv)).decode("ascii", "replace")
            log.debug("HTTP/2 protocol error from %s: %s", self.peer_ip, err)
            # (refused when nghttp2 already queued its own GOAWAY: that one is sent)
            lib.nghttp2_session_terminate_session2(self.session, last, L.PROTOCOL_ERROR)
        self.flush()
        self.close()

    # --- streams ----------------------------------------------------------------------------
    def _on_request(self, sid: int, fields: list[tuple[bytes, bytes]], ended: bool) -> None:
        self._opened += 1
        if self.draining:
            # past our GOAWAY's last stream id: never processed, the client may retry it
            self.reset_stream(sid, L.REFUSED_STREAM)
            return
        if self._idle is not None:
            self._cancel_idle()
        head = split_fields(fields, self.underscores, self._owned)
        w = NgStream(self, sid, head.raw_method.decode("latin-1"))
        self.streams[sid] = w
        # the rules of the HTTP/1.1 listener (http/streamreq.py, shared with HTTP/3), a
        # refusal answered there; regular fields nghttp2 let through its own RFC 9113 checks
        # pass ours (a field it found invalid is kept, ``ng2cb._invalid_header``, and then
        # all are checked)
        req = self.open_stream(w, head, ended, not self._hbad)
        if req is None:
            return
        # through ``Any``, as ``handle``: compiled, a typed call would check the stream's type
        app: Any = self.app
        if req.body is None and app.try_fast(w, req):
            # task-free (``proxy/fast.py``, ``proxy/fastsink.py``): the response is relayed
            # from the upstream's callbacks, or the request was handed to a task of its own
            # (``fast_fallback``); nghttp2 calls nothing back from here, and anything
            # submitted meanwhile leaves with this ``data_received``'s flush
            return
        self.start_task(w, req, None)

    def start_task(self, w: NgStream, req: Any, resumed: Any) -> None:
        """Serve ``w`` in a task: ``req`` from the start, or a task-free exchange's
        ``resumed`` (``serverapi.Resumed``) from where it stopped. A body still queued in
        ``w.out`` when the handler returns needs no task: nghttp2's read callback takes it
        as the peer's windows allow (no drain wait, one loop pass less)."""
        w.task = self.loop.create_task(
            serve_stream(self.app, w, req, log, wait_out=False, resumed=resumed)
        )

    def _ack(self, sid: int, n: int) -> None:
        if n <= 0 or self.closed:
            return
        lib.nghttp2_session_consume(self.session, sid, n)
        self.flush_soon()

    # --- frames out ------------------------------------------------------------------------------
    def _nv(self, fields: list[tuple[bytes, bytes]]) -> Any:
        """An ``nghttp2_nv *`` to ``fields``, valid until the next call (the submit calls
        copy them): written into this connection's buffer in one cffi call."""
        data = _nv_bytes(fields, self._nv_base)
        size = len(data)
        if size > self._nv_cap:
            # (rare: the buffer grows, and the pointers are made again for its address)
            cap = max(1024, size)
            buf = ffi.new("char[]", cap)
            self._nv_buf = buf  # (keeps the memory alive)
            self._nv_ptr = ffi.cast("nghttp2_nv *", buf)
            self._nv_base = int(ffi.cast("uintptr_t", buf))
            self._nv_cap = cap
            data = _nv_bytes(fields, self._nv_base)
        _memmove(self._nv_buf, data, size)
        return self._nv_ptr

    def submit_response(self, sid: int, fields: list[tuple[bytes, bytes]], body: bool) -> None:
        """HEADERS of the response on ``sid``; DATA follow from the stream's queue when
        ``body`` (else the HEADERS end the stream)."""
        nva = self._nv(fields)
        _submit_response(self.session, sid, nva, len(fields), cb.PROVIDER if body else ffi.NULL)
        self._tokens = CONTROL_BURST  # (response traffic forgives PINGs: ServerH2.send_headers)
        self.flush_soon()

    def send_info(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        """A 1xx response head on ``sid``."""
        nva = self._nv(fields)
        lib.nghttp2_submit_headers(self.session, 0, sid, ffi.NULL, nva, len(fields), ffi.NULL)
        self.flush_soon()

    def submit_trailer(self, sid: int, fields: list[tuple[bytes, bytes]]) -> None:
        nva = self._nv(fields)
        lib.nghttp2_submit_trailer(self.session, sid, nva, len(fields))

    def resume(self, sid: int) -> None:
        """The stream's queue has new data (or its end): let nghttp2 ask for it again."""
        lib.nghttp2_session_resume_data(self.session, sid)
        self._tokens = CONTROL_BURST
        self.flush_soon()

    def reset_stream(self, sid: int, code: int) -> None:
        if not self.closed:
            lib.nghttp2_submit_rst_stream(self.session, 0, sid, code)
            self.flush_soon()

    def flush_soon(self) -> None:
        """Write what nghttp2 queued once this loop iteration is over (one ``write`` for the
        frames of every stream answered meanwhile); inside ``data_received`` its own flush
        at the end covers it."""
        if self._flush_pending or self._receiving or self.closed:
            return
        self._flush_pending = True
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        if self.closed:
            return
        out: list[bytes] = []
        p = self._out_ptr
        sess = self.session
        prev, cb.cur = cb.cur, self
        try:
            while True:
                n = _mem_send(sess, p)
                if n > 0:
                    out.append(_unpack(p[0], n))
                    continue
                rst = self.pending_rst
                if n < 0 or not rst:
                    break
                self.pending_rst = []
                for sid in rst:
                    lib.nghttp2_submit_rst_stream(sess, 0, sid, L.NO_ERROR)
                    w = self.streams.get(sid)
                    if w is not None:
                        w.stream_gone()
        finally:
            cb.cur = prev
        t = self.transport
        if out and t is not None and not t.is_closing():
            t.write(out[0] if len(out) == 1 else b"".join(out))
        if n < 0 or not (
            lib.nghttp2_session_want_read(sess) or lib.nghttp2_session_want_write(sess)
        ):
            # a GOAWAY was sent and nothing is left in flight (or the session failed)
            self.close()

    # --- called back from http/ng2cb.py (``ng2cb.cur`` is this connection) -------------------
    def on_begin_frame(self, sid: int, ftype: int, flags: int, length: int) -> int:
        if ftype == L.CONTINUATION:
            self._cont += 1
            self._cont_bytes += length
            if self._cont >= MAX_CONTINUATIONS or self._cont_bytes > self._max_block:
                return self._flood("CONTINUATION flood")
        elif ftype == L.HEADERS:
            self._cont, self._cont_bytes = 0, length
            if sid > self._last_sid:
                # a new stream's request head (a client's stream ids only grow): its fields
                # are collected (one callback per request fewer than ``begin_headers``)
                self._last_sid = self._hsid = sid
                self._hdrs = []
                self._hbad = self._hcheck
            else:
                self._hdrs = None  # trailers: their fields are not kept
        elif ftype == L.RST_STREAM:
            w = self.streams.get(sid)
            if w is not None and not (w.ended and not w.out):
                self._resets += 1
                n = self._resets
                if n > PREMATURE_RESETS and 2 * n > self._opened:
                    return self._flood("rapid reset flood")
        elif (ftype == L.PING or ftype == L.SETTINGS) and not flags & L.FLAG_ACK:
            now = self.loop.time()
            tokens = min(CONTROL_BURST, self._tokens + (now - self._token_at) * CONTROL_PER_SECOND)
            self._token_at = now
            if tokens < 1.0:
                return self._flood("PING flood" if ftype == L.PING else "SETTINGS flood")
            self._tokens = tokens - 1.0
        return 0

    def _flood(self, what: str) -> int:
        self._calm = what
        return L.ERR_CALLBACK_FAILURE

    def on_stream_close(self, sid: int, code: int) -> None:
        w = self.streams.pop(sid, None)
        if w is None:
            return
        b = w.body
        if b is not None:
            # credit for bytes buffered but never read goes back to the connection window
            self._ack(sid, b._buffered)
        if code != L.NO_ERROR or not w.ended or w.out:
            w.lost()
        if not self.streams:
            if self.draining:
                self.flush_soon()
            else:
                self._arm_idle()

    def on_data(self, sid: int, data: bytes) -> None:
        w = self.streams.get(sid)
        b = w.open_body() if w is not None else None
        if b is None or self.body_over_limit(b, len(data)):
            # nobody will read it: return the credit at once so other streams keep flowing
            lib.nghttp2_session_consume(self.session, sid, len(data))
            return
        b.feed(data)

    def on_end(self, sid: int) -> None:
        w = self.streams.get(sid)
        if w is not None:
            w.request_ended()

    # --- lifecycle -------------------------------------------------------------------------------
    def begin_drain(self) -> None:
        if self.closed or self.draining:
            return
        self.draining = True
        last = lib.nghttp2_session_get_last_proc_stream_id(self.session)
        lib.nghttp2_submit_goaway(self.session, 0, last, L.NO_ERROR, ffi.NULL, 0)
        self.flush()
        if not self.streams:
            self.close()

    def shutdown(self) -> None:
        if self.closed:
            return
        last = lib.nghttp2_session_get_last_proc_stream_id(self.session)
        lib.nghttp2_session_terminate_session2(self.session, last, L.NO_ERROR)
        self.flush()
        self.close()

    def close(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()


def drain_connections(app: App | None = None) -> int:
    """:meth:`NgConnection.begin_drain` on every live connection (of ``app`` when given)."""
    return drain_live(_LIVE, app)


__all__ = ["NgConnection", "drain_connections"]
