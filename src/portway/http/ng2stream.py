"""The response writer of one stream of the libnghttp2 engine (``http/ng2.py``).

:class:`NgStream` is the shared :class:`~portway.http.streamserve.StreamWriter` (the
response-writer interface, as on the h2 engine and HTTP/3) with nghttp2 as its transport:
the head is ``nghttp2_submit_response`` with the engine's data provider, and the body waits
in :attr:`NgStream.out` until nghttp2's read callback (:meth:`NgStream.read_into`) copies it
into DATA frames, within the peer's windows. An empty queue defers the provider; new data
resumes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

from portway.http import ng2lib as L
from portway.http.streamserve import StreamRules, StreamWriter

if TYPE_CHECKING:
    from portway.http.forwarded import ForwardMemo
    from portway.http.ng2 import NgConnection
    from portway.http.serverapi import Resumed

_loaded = L.load()
_memmove: Any = _loaded[0].memmove if _loaded is not None else None

#: HTTP/2's reset codes for ``close()`` and ``abort()``; 4 bytes per field in a head's size
_RULES: Final = StreamRules("2", L.CANCEL, L.INTERNAL_ERROR, 4)


class NgStream(StreamWriter):
    """The :class:`ClientConnection` one response is written through on an HTTP/2 stream
    of the libnghttp2 engine; also the task-free path's ``FastConn``
    (``http/serverapi.py``).

    ``close()`` cancels an unfinished stream (a complete response still queued behind flow
    control is not cut short); ``abort()`` resets it. Neither touches the connection.
    """

    def __init__(self, conn: NgConnection, stream_id: int, method: str) -> None:
        # (the connection's ``extra``, read-only and shared by its streams: no dict per stream)
        super().__init__(_RULES, stream_id, method, conn.loop, conn.extra, conn.alt_svc)
        self.h2conn = conn
        #: nghttp2's read callback found ``out`` empty and was told to wait
        self.deferred = False
        #: reset the stream (NO_ERROR) once the response is out: the request body is unread
        self.reset_after_end = False

    @property
    def _can_write(self) -> asyncio.Future[None] | None:
        """None when a write may follow at once; else a future done once nghttp2 took the
        queued body (then the connection's own, while its transport is full)."""
        if self.out and not self.closed:
            w = self._waiter
            if w is None:
                w = self._waiter = self.loop.create_future()
            return w
        return self.h2conn._can_write

    # --- the transport hooks (``StreamWriter``) ---------------------------------------------
    def send_interim(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.h2conn.send_info(self.stream_id, fields)

    def send_response(self, fields: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        # (no push: the data provider pulls the body from ``out``)
        self.h2conn.submit_response(self.stream_id, fields, not end_stream)

    def push(self) -> None:
        if self.deferred:
            self.deferred = False
            self.h2conn.resume(self.stream_id)
        else:
            self.h2conn.flush_soon()

    def send_reset(self, code: int) -> None:
        self.h2conn.reset_stream(self.stream_id, code)

    def conn_drain(self) -> Awaitable[None]:
        return self.h2conn.drain()

    def send_error(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.head_sent = True
        self.out.append(body)
        self.eof_pending = True
        self.h2conn.submit_response(self.stream_id, headers, True)
        b = self.body
        if b is not None and not b._eof:
            # the request body will never be read: end the stream once the answer is out
            self.abandon_body()

    def abandon_body(self) -> None:
        """Reset with NO_ERROR once the response's last frame is serialized: a RST_STREAM
        submitted before that would overtake the DATA still in :attr:`out`, and nghttp2
        drops a response HEADERS still queued when the stream's RST_STREAM is submitted (a
        trailers-only gRPC answer would never leave). A response already ended waits for
        the connection's next flush (``pending_rst``), the others for their EOF."""
        if self.ended and not self.out:
            self.h2conn.pending_rst.append(self.stream_id)
            self.h2conn.flush_soon()
        else:
            self.reset_after_end = True

    def consume(self, n: int) -> None:
        self.h2conn._ack(self.stream_id, n)

    # --- the task-free path (``http/serverapi.py:FastConn``) ----------------------------------
    @property
    def transport(self) -> asyncio.Transport | None:
        return self.h2conn.transport

    @property
    def forward_memo(self) -> ForwardMemo:
        return self.h2conn.forward_memo

    def now(self) -> float:
        return self.loop.time()

    def fast_done(self, keep: bool, now: float = -1.0) -> None:
        """The exchange handed its whole response to the stream: it ends with its
        END_STREAM (the connection goes on whatever ``keep`` says)."""
        self.exchange = None

    def fast_fallback(self, resumed: Resumed) -> None:
        """A task carries the request on (retry, error before the response head)."""
        self.exchange = None
        self.h2conn.start_task(self, None, resumed)

    # --- nghttp2's side -------------------------------------------------------------------------
    def read_into(self, buf: Any, length: int, flags: Any) -> int:
        """nghttp2's data read callback: copy up to ``length`` queued bytes into ``buf``;
        set EOF (and submit the trailers) once the end is reached, else defer when empty."""
        out = self.out
        n = 0
        while out and n < length:
            d = out[0]
            k = len(d)
            room = length - n
            if k <= room:
                # (the first chunk at ``buf`` itself: no pointer cdata for ``buf + 0``)
                _memmove(buf + n if n else buf, d, k)
                out.popleft()
                n += k
            else:
                v = d if isinstance(d, memoryview) else memoryview(d)
                _memmove(buf + n if n else buf, v[:room], room)
                out[0] = v[room:]
                n = length
        if not out:
            if self.eof_pending and not self.ended:
                self.ended = True
                fl = L.DATA_FLAG_EOF
                if self.trailers:
                    fl |= L.DATA_FLAG_NO_END_STREAM
                    self.h2conn.submit_trailer(self.stream_id, self.trailers)
                flags[0] = fl
                if self.reset_after_end:
                    self.h2conn.pending_rst.append(self.stream_id)
            elif n == 0:
                self.deferred = True
                return L.ERR_DEFERRED
            self.wake()
        return n


__all__ = ["NgStream"]
