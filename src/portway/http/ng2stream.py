"""The response writer of one stream of the libnghttp2 engine (``http/ng2.py``).

:class:`NgStream` implements the response-writer interface (``send_head``/``send_body``/
``send_end``/``drain``/``close``/``abort``, 1xx through ``send_info``) exactly as
``h2._StreamWriter`` does, over nghttp2: the head is ``nghttp2_submit_response`` with the
engine's data provider, and the body waits in :attr:`NgStream.out` until nghttp2's read
callback (:meth:`NgStream.read_into`) copies it into DATA frames, within the peer's windows.
An empty queue defers the provider; new data resumes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from portway.http import ng2lib as L
from portway.http.headers import Headers
from portway.http.relay import head_ends_stream, stream_fields
from portway.http.server import ClientDisconnectedError
from portway.http.streamreq import StreamBody

if TYPE_CHECKING:
    from portway.http.forwarded import ForwardMemo
    from portway.http.ng2 import NgConnection
    from portway.http.serverapi import CallbackExchange, Resumed

_loaded = L.load()
_memmove: Any = _loaded[0].memmove if _loaded is not None else None

#: ``:status`` values of the usual final statuses (no formatting per response)
_STATUS: Final[dict[int, bytes]] = {s: b"%d" % s for s in (200, 201, 204, 301, 302, 304, 404)}


class NgStream:
    """The :class:`ClientConnection` one response is written through on an HTTP/2 stream.

    ``close()`` cancels an unfinished stream (a complete response still queued behind flow
    control is not cut short); ``abort()`` resets it. Neither touches the connection.
    """

    def __init__(self, conn: NgConnection, stream_id: int, method: str) -> None:
        self.h2conn = conn
        self.stream_id = stream_id
        self.method = method
        self.closed = False
        #: the connection's values (read-only, shared by its streams: no dict per stream)
        self.extra: dict[str, Any] = conn.extra
        self.upgrade_buffer: bytearray | None = None
        self.body: StreamBody | None = None
        self.task: asyncio.Task[None] | None = None
        self.trailers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        #: body bytes not yet taken by nghttp2 (a memoryview for a partly taken chunk)
        self.out: deque[bytes | memoryview] = deque()
        #: the response's end is queued behind ``out``
        self.eof_pending = False
        #: END_STREAM (or the trailers) handed to nghttp2
        self.ended = False
        #: nghttp2's read callback found ``out`` empty and was told to wait
        self.deferred = False
        #: reset the stream (NO_ERROR) once the response is out: the request body is unread
        self.reset_after_end = False
        self._waiter: asyncio.Future[None] | None = None
        #: the task-free exchange in progress (``proxy/fastsink.py``), told when the stream
        #: goes away
        self.exchange: CallbackExchange | None = None

    # --- the response-writer interface ------------------------------------------------------
    @property
    def _can_write(self) -> asyncio.Future[None] | None:
        """None when a write may follow at once; else a future done once nghttp2 took the
        queued body (then the connection's own, while its transport is full)."""
        if self.out and not self.closed:
            w = self._waiter
            if w is None:
                w = self._waiter = self.h2conn.loop.create_future()
            return w
        return self.h2conn._can_write

    def send_info(self, status: int, reason: bytes, fields: list[tuple[bytes, bytes]]) -> None:
        if status == 100 or status == 101 or self.head_sent or self.closed:
            # 100: sent by the stream itself when the body is first read; no 101 in HTTP/2
            return
        head = [(b":status", b"%d" % status), *stream_fields(fields)]
        self.h2conn.send_info(self.stream_id, head)

    def send_head(
        self,
        status: int,
        reason: bytes,
        fields: list[tuple[bytes, bytes]],
        mode: str,
        body: bytes,
        end: bool,
    ) -> int:
        if self.closed:
            raise ClientDisconnectedError("stream closed")
        self.head_sent = True
        st = _STATUS.get(status)
        if st is None:
            st = b"%d" % status
        out = stream_fields(fields, [(b":status", st)])
        alt = self.h2conn.alt_svc
        if alt is not None:
            out.append((b"alt-svc", alt))
        if head_ends_stream(self.method, status, mode, body, out):
            self.ended = True
            self.h2conn.submit_response(self.stream_id, out, False)
        else:
            if body:
                self.out.append(body)
            if end:
                self.eof_pending = True
            self.h2conn.submit_response(self.stream_id, out, True)
        size = 0
        for k, v in out:
            size += len(k) + len(v) + 4
        return size

    def send_body(self, data: bytes) -> None:
        if self.closed:
            raise ClientDisconnectedError("stream closed")
        if self.ended or not data:
            return
        self.out.append(data if type(data) is bytes else bytes(data))
        self._kick()

    def send_end(self, trailers: Headers | None) -> None:
        if self.ended or self.closed or self.eof_pending:
            return
        if trailers is not None:
            self.trailers = stream_fields(trailers.raw())
        self.eof_pending = True
        self._kick()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """HTTP/1.1 bytes have no meaning on a stream: writers use the interface above."""
        raise TypeError("an HTTP/2 stream takes send_head/send_body/send_end, not bytes")

    def write_soon(self, data: bytes) -> None:
        self.write(data)

    async def drain(self) -> None:
        while self.out and not self.closed:
            w = self._waiter
            if w is None:
                w = self._waiter = self.h2conn.loop.create_future()
            await w
        if self.closed and not self.ended:
            raise ClientDisconnectedError("stream closed")
        await self.h2conn.drain()

    def close(self) -> None:
        if self.ended or self.closed or self.eof_pending:
            # a complete response still queued behind flow control is not cut short
            return
        self.reset(L.CANCEL)

    def abort(self) -> None:
        if not self.ended and not self.closed:
            self.reset(L.INTERNAL_ERROR)

    # --- the task-free path (``http/serverapi.py:FastConn``) ----------------------------------
    @property
    def transport(self) -> asyncio.Transport | None:
        return self.h2conn.transport

    @property
    def alt_svc(self) -> bytes | None:
        return self.h2conn.alt_svc

    @property
    def forward_memo(self) -> ForwardMemo:
        return self.h2conn.forward_memo

    def now(self) -> float:
        return self.h2conn.loop.time()

    def fast_done(self, keep: bool, now: float = -1.0) -> None:
        """The exchange handed its whole response to the stream: it ends with its
        END_STREAM (the connection goes on whatever ``keep`` says)."""
        self.exchange = None

    def fast_fallback(self, resumed: Resumed) -> None:
        """A task carries the request on (retry, error before the response head)."""
        self.exchange = None
        self.h2conn.start_task(self, None, resumed)

    # --- nghttp2's side -------------------------------------------------------------------------
    def _kick(self) -> None:
        if self.deferred:
            self.deferred = False
            self.h2conn.resume(self.stream_id)
        else:
            self.h2conn.flush_soon()

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
            self._wake()
        return n

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def reset(self, code: int) -> None:
        self.h2conn.reset_stream(self.stream_id, code)
        self.stream_gone()

    def stream_gone(self) -> None:
        """The stream can carry nothing more (reset by either side, or the connection died)."""
        if self.closed:
            return
        self.closed = True
        self.out.clear()
        b = self.body
        if b is not None and not b._eof:
            b.set_exception(ClientDisconnectedError("stream reset"))
        self._wake()
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.client_lost()


__all__ = ["NgStream"]
