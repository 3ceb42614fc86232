"""Serving a request on a stream: HTTP/2 (both engines, ``http/h2.py`` and ``http/ng2.py``)
and HTTP/3 (``http/h3.py``).

- :class:`StreamWriter` is the response writer of one stream; a protocol's subclass only
  says how a head, a body, an end and a reset go out (its "transport" hooks);
- :func:`open_request` turns a stream's fields into the :class:`Request`
  (``http/streamreq.py``'s rules) or answers the refusal;
- :func:`serve_stream` is the stream's task: the handler, then what an unfinished response
  or an unread request body leaves to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from portway.errors import GatewayError
from portway.http.exceptions import ClientDisconnectedError
from portway.http.forwarded import TrustedProxies
from portway.http.headers import Headers
from portway.http.limits import ServerLimits
from portway.http.models import Request
from portway.http.relay import head_ends_stream, stream_fields
from portway.http.requestid import request_id_of
from portway.http.serverparse import _Abort
from portway.http.streamreq import StreamBody, StreamHead, build_request, check_head

if TYPE_CHECKING:
    from portway.http.serverapi import CallbackExchange

#: ``:status`` values of the usual final statuses (no formatting per response)
_STATUS: Final[dict[int, bytes]] = {s: b"%d" % s for s in (200, 201, 204, 301, 302, 304, 404)}


def _ended_body(expect_continue: bool) -> StreamBody:
    raise AssertionError("a request whose stream ended has no body")  # pragma: no cover


class StreamRules:
    """What differs between HTTP/2 and HTTP/3 for a :class:`StreamWriter`, one instance per
    protocol: its ``version`` ("2", "3"), the reset codes of ``close()`` (``cancel``) and
    ``abort()`` (``internal_error``), and the per-field overhead counted in a head's size."""

    def __init__(self, version: str, cancel: int, internal_error: int, field_cost: int) -> None:
        self.version = version
        self.cancel = cancel
        self.internal_error = internal_error
        self.field_cost = field_cost


@mypyc_attr(allow_interpreted_subclasses=True)
class StreamWriter:
    """The :class:`ClientConnection` one response is written through on a stream.

    It implements the response-writer interface natively: ``send_head`` becomes HEADERS
    (connection-specific fields dropped, RFC 9113 §8.2.2, RFC 9114 §4.2), ``send_body``
    and ``send_end`` queue the body and its end in :attr:`out` / :attr:`eof_pending`;
    nothing the handler writes is parsed back. ``close()`` cancels an unfinished stream (a
    complete response still queued behind flow control is not cut short); ``abort()``
    resets it. Neither touches the connection.

    A protocol subclasses it with its transport hooks: :meth:`send_interim` (1xx HEADERS),
    :meth:`send_response` (the response HEADERS, ``end_stream`` when there is no body),
    :meth:`push` (send what :attr:`out` and :attr:`eof_pending` hold, as far as the
    protocol's flow control lets; sets :attr:`ended` once the end is out),
    :meth:`send_reset`, :meth:`send_error`, :meth:`consume` (request body credit), and for
    back-pressure :meth:`backlogged`, :meth:`conn_paused`, :meth:`conn_drain`;
    :func:`serve_stream` calls :meth:`abandon_body` and :meth:`release`.

    :attr:`exchange` is a task-free exchange writing through the stream
    (``proxy/fastsink.py``), told (``client_lost``) when the stream goes away.
    """

    def __init__(
        self,
        rules: StreamRules,
        stream_id: int,
        method: str,
        loop: asyncio.AbstractEventLoop,
        extra: dict[str, Any],
        alt_svc: bytes | None = None,
    ) -> None:
        self.rules = rules
        self.stream_id = stream_id
        self.method = method
        self.loop = loop
        self.closed = False
        self.extra = extra
        #: ``Alt-Svc`` value added to the response head (an HTTP/3 endpoint, on HTTP/2)
        self.alt_svc = alt_svc
        self.upgrade_buffer: bytearray | None = None
        self.body: StreamBody | None = None
        self.task: asyncio.Task[None] | None = None
        #: the response's trailers (already ``stream_fields``), sent after :attr:`out`
        self.trailers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        #: body bytes not yet sent (a memoryview for a partly sent chunk)
        self.out: deque[bytes | memoryview] = deque()
        #: the response's end is queued behind :attr:`out`
        self.eof_pending = False
        #: the end of the stream (or the trailers) is sent
        self.ended = False
        self._waiter: asyncio.Future[None] | None = None
        self.exchange: CallbackExchange | None = None

    # --- the response-writer interface ------------------------------------------------------
    @property
    def _can_write(self) -> object | None:
        return True if self.backlogged() or self.conn_paused() else None

    def send_info(self, status: int, reason: bytes, fields: list[tuple[bytes, bytes]]) -> None:
        if status == 100 or status == 101 or self.head_sent or self.closed:
            # 100: sent by the stream itself when the body is first read; no 101 in HTTP/2
            # (RFC 9113 §8.6) nor HTTP/3
            return
        self.send_interim([(b":status", b"%d" % status), *stream_fields(fields)])

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
        alt = self.alt_svc
        if alt is not None:
            out.append((b"alt-svc", alt))
        if head_ends_stream(self.method, status, mode, body, out):
            self.ended = True
            self.send_response(out, True)
        else:
            if body:
                self.out.append(body)
            if end:
                self.eof_pending = True
            self.send_response(out, False)
        cost = self.rules.field_cost
        size = 0
        for k, v in out:
            size += len(k) + len(v) + cost
        return size

    def send_body(self, data: bytes) -> None:
        if self.closed:
            raise ClientDisconnectedError("stream closed")
        if self.ended or not data:
            return
        self.out.append(data if type(data) is bytes else bytes(data))
        self.push()

    def send_end(self, trailers: Headers | None) -> None:
        if self.ended or self.closed or self.eof_pending:
            return
        if trailers is not None:
            self.trailers = stream_fields(trailers.raw())
        self.eof_pending = True
        self.push()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """HTTP/1.1 bytes have no meaning on a stream: writers use the interface above."""
        raise TypeError(
            f"an HTTP/{self.rules.version} stream takes send_head/send_body/send_end, not bytes"
        )

    def write_soon(self, data: bytes) -> None:
        self.write(data)

    async def drain(self) -> None:
        while not self.closed and self.backlogged():
            w = self._waiter
            if w is None or w.done():
                # (a pending one may have been handed out already, by ``_can_write``)
                w = self._waiter = self.loop.create_future()
            await w
        if self.closed and not self.ended:
            raise ClientDisconnectedError("stream closed")
        more = self.conn_drain()
        if more is not None:
            await more

    def close(self) -> None:
        if self.ended or self.closed or self.eof_pending:
            # a complete response still queued behind flow control is not cut short
            return
        self.reset(self.rules.cancel)

    def abort(self) -> None:
        if not self.ended and not self.closed:
            self.reset(self.rules.internal_error)

    # --- state --------------------------------------------------------------------------------
    def wake(self) -> None:
        """Let a :meth:`drain` waiting on this stream look again."""
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    def reset(self, code: int) -> None:
        self.send_reset(code)
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
        self.wake()
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.client_lost()

    def open_body(self) -> StreamBody | None:
        """The request body if it still takes DATA (the stream open, the body neither
        complete nor failed), else None: nobody will read what arrives."""
        b = self.body
        if b is None or self.closed or b._eof or b.failed:
            return None
        return b

    def request_ended(self) -> None:
        """The client ended the request (END_STREAM, or trailers)."""
        b = self.body
        if b is not None and not b.failed:
            b.feed_eof()

    def refuse(self, err: GatewayError, fields: list[tuple[bytes, bytes]]) -> None:
        """Answer with ``err``'s JSON error (a request refused before the handler);
        ``fields``: the request's, for the client's X-Request-ID."""
        rid = request_id_of(fields)
        body = err.body(rid)
        headers = [
            (b":status", b"%d" % err.status),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-request-id", rid.encode("ascii")),
        ]
        for k, v in err.headers:
            headers.append((k.lower().encode("latin-1"), v.encode("latin-1")))
        self.send_error(headers, body)

    def lost(self) -> None:
        """The client reset the stream or the connection died: :meth:`stream_gone`, and the
        handler's task is cancelled."""
        self.stream_gone()
        t = self.task
        if t is not None and not t.done():
            t.cancel()

    def peer_reset(self) -> None:
        """The client reset the stream: :meth:`lost`, then :meth:`release`."""
        self.lost()
        self.release()

    # --- the transport hooks (each protocol's subclass) -----------------------------------------
    def send_interim(self, fields: list[tuple[bytes, bytes]]) -> None:
        """An interim (1xx) HEADERS frame."""
        raise NotImplementedError

    def send_response(self, fields: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """The response HEADERS; unless ``end_stream``, the body follows from :attr:`out`."""
        raise NotImplementedError

    def push(self) -> None:
        """:attr:`out` or :attr:`eof_pending` grew: send what the flow control allows."""
        raise NotImplementedError

    def send_reset(self, code: int) -> None:
        """Reset the stream on the wire (the state is :meth:`reset`'s)."""
        raise NotImplementedError

    def backlogged(self) -> bool:
        """This stream holds more than a writer should add to (:meth:`drain` waits on it)."""
        return bool(self.out)

    def conn_paused(self) -> bool:
        """The connection's transport is paused (the stream reports it in ``_can_write``)."""
        return False

    def conn_drain(self) -> Awaitable[None] | None:
        """What :meth:`drain` awaits last (the connection's own drain), if anything."""
        return None

    def send_error(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A complete response (``headers`` with no connection-specific fields, ``body``)
        before any handler ran (:meth:`refuse`)."""
        raise NotImplementedError

    def abandon_body(self) -> None:
        """The response is complete but the request body is not (RFC 9113 §8.1, RFC 9114
        §4.1): tell the client to stop sending it."""
        raise NotImplementedError

    def release(self) -> None:
        """The handler's task is over: the connection may forget the stream."""

    def consume(self, n: int) -> None:
        """The handler consumed ``n`` bytes of the request body (HTTP/2 returns the credit)."""


def open_request(
    w: StreamWriter,
    head: StreamHead,
    ended: bool,
    limits: ServerLimits,
    trusted: TrustedProxies | None,
    *,
    scheme: str,
    peer: tuple[str, int],
    server_port: int,
    log: logging.Logger,
    fields_checked: bool = False,
) -> Request | None:
    """The :class:`Request` of stream ``w`` (the rules of the HTTP/1.1 listener), or None
    when they refuse it (``w.refuse`` has answered). The body (unless the stream ``ended``)
    becomes ``w.body``: ``w.consume(n)`` as it is consumed, ``100 Continue`` through
    ``w.send_interim`` on the first read when the client expects it. ``fields_checked``:
    see :func:`check_head`."""
    make: Callable[[bool], StreamBody] = _ended_body
    if not ended:  # (no body: no closure made per request)

        def make_body(expect_continue: bool) -> StreamBody:
            def first_read() -> None:
                if expect_continue and not w.head_sent and not w.closed:
                    w.send_interim([(b":status", b"100")])

            body = StreamBody(w.consume, first_read, limits.body_timeout)
            w.body = body
            return body

        make = make_body
    version = w.rules.version
    try:
        check_head(head, limits, fields_checked)
        return build_request(
            head,
            limits,
            trusted,
            version=version,
            scheme=scheme,
            peer=peer,
            server_port=server_port,
            ended=ended,
            make_body=make,
        )
    except (_Abort, GatewayError) as e:
        # (one clause: compiled, a name bound by two clauses keeps the first one's type)
        err = e.error if isinstance(e, _Abort) else e
    except Exception:
        # a bug in Portway: logged with its traceback, a 500 (not the client's fault)
        log.exception("internal error while reading an HTTP/%s request", version)
        err = GatewayError("internal error")
    w.refuse(err, head.fields)
    return None


async def serve_stream(
    app: Any,
    w: StreamWriter,
    req: Request | None,
    log: logging.Logger,
    *,
    wait_out: bool = True,
    resumed: Any = None,
) -> None:
    """Serve ``req`` through ``app`` on stream ``w`` (the task of one stream), or carry a
    task-free exchange's ``resumed`` (``serverapi.Resumed``) on from where it stopped.
    ``app`` is ``Any``: compiled, a call typed ``App.handle(ServerConnection, ...)`` would
    check that ``w`` is one (it is a ClientConnection, as the handler takes). With
    ``wait_out`` the task stays until a body still queued in ``w.out`` is sent (without it,
    the protocol sends it without the task: nghttp2's read callback)."""
    try:
        if resumed is None:
            await app.handle(w, req)
        else:
            await resumed.run(w)
        if not w.ended and not w.closed:
            # the handler returned without finishing the response (close-delimited body)
            w.close()
        # a bytes body larger than the peer's window is still queued: see it out
        while wait_out and w.out and not w.closed:
            await w.drain()
    except (asyncio.CancelledError, ConnectionError):
        pass
    except Exception:
        log.exception("unhandled error while serving an HTTP/%s stream", w.rules.version)
        w.abort()
    finally:
        w.task = None
        b = w.body
        if not w.closed and b is not None and not b._eof:
            w.abandon_body()
        w.release()


__all__ = ["StreamRules", "StreamWriter", "open_request", "serve_stream"]
