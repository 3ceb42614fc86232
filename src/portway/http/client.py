"""Upstream side of the data plane: an HTTP/1.1 client protocol on llhttp.

:class:`UpstreamConnection` carries one exchange at a time over a keep-alive connection owned by
a :class:`~portway.http.pool.ConnectionPool`. The request is written by the caller
(``write``/``drain``); the response head arrives through ``read_head()`` and the body streams
into a flow-controlled :class:`~portway.http.body.BodyStream`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httptools

from portway.errors import GatewayError, RequestTimeoutError
from portway.http.body import BodyStream
from portway.http.exceptions import ReadTimeoutError as ReadTimeoutError
from portway.http.exceptions import UpstreamProtocolError as UpstreamProtocolError
from portway.http.exceptions import UpstreamResetError as UpstreamResetError
from portway.http.flow import HIGH_WATER, LOW_WATER, WriteFlow, as_protocol
from portway.http.headers import PLAIN_CONNECTION, Headers
from portway.http.rawhead import SPECIAL, RawHead, Reparse, scan_head
from portway.http.relay import body_forbidden
from portway.http.sweeper import NEVER, sweeper_for
from portway.http.wire import METHODS, append_fields

log: Final = logging.getLogger("portway.http")

#: whether a name of that length can be in ``SPECIAL`` (none is 20 bytes or longer)
_SPECIAL_SIZES: Final = tuple(any(len(x) == i for x in SPECIAL) for i in range(20))


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    headers: Headers
    keep_alive: bool
    chunked: bool
    content_length: int | None
    #: bytes after a 101 response, to be tunnelled
    upgrade_tail: bytes | None = None
    #: a hop-by-hop field or Via is present (the proxy must rewrite the header list)
    special: bool = True
    #: the Connection field values, joined (None: no Connection field)
    connection: bytes | None = None


class ResponseSink:
    """Receives a response by callbacks instead of ``read_head()`` + a :class:`BodyStream`
    (the task-free exchange in ``portway.proxy.fast`` subclasses it).

    ``on_head``/``on_info``/``on_body``/``on_trailer``/``on_end`` run inside llhttp callbacks
    and must not raise nor start another exchange on this connection; ``settle`` runs after
    each batch of received bytes (outside the parser) and is where a finished exchange may
    release the connection. ``on_error`` ends the exchange (also outside the parser).
    ``paused`` tells the read timeout that the client, not the upstream, is holding things up.
    ``on_head`` gets ``special`` when the head has hop-by-hop fields, Via, or a Connection
    value naming other fields (what a plain ``Connection: keep-alive``/``close`` and
    Content-Length need, dropping two names, the sink does itself).

    A sink with ``raw_head`` set takes a plain response head (no hop-by-hop field but a plain
    Connection value, no Via, no Transfer-Encoding, not 1xx) as ``on_head_raw``: its header
    lines as llhttp validated them, whole, without a callback per field (see
    :class:`_Lite`); any other head still comes as ``on_head``.

    A base class, not a ``Protocol``: compiled, calls through it are direct (a protocol-typed
    call is a Python method call with argument parsing, five of them per response).
    """

    __slots__ = ("paused", "raw_head")

    #: set by the subclass's ``__init__`` (False)
    paused: bool
    #: set by the subclass's ``__init__``: whether ``on_head_raw`` may be used
    raw_head: bool

    def on_info(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        raise NotImplementedError

    def on_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        chunked: bool,
        content_length: bytes | None,
        special: bool,
        connection: bytes | None,
    ) -> None:
        raise NotImplementedError

    def on_head_raw(
        self,
        status: int,
        reason: bytes,
        fields: list[bytes],
        keep_alive: bool,
        content_length: bytes | None,
    ) -> None:
        """``fields``: runs of whole ``name: value CRLF`` lines, in order, without the
        Connection lines (``keep_alive`` says what they meant); a Content-Length line is
        among them, its value is ``content_length``. The list is the sink's."""
        raise NotImplementedError

    def on_body(self, data: bytes) -> None:
        raise NotImplementedError

    def on_trailer(self, name: bytes, value: bytes) -> None:
        raise NotImplementedError

    def on_end(self) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        raise NotImplementedError

    def on_error(self, exc: BaseException) -> None:
        raise NotImplementedError


class _Lite:
    """The protocol object of an upstream connection's second llhttp parser: it has no
    ``on_status``/``on_header`` callbacks, so llhttp validates a response head without a
    call into Python per field, and ``on_headers_complete`` takes the validated head's bytes
    whole (``UpstreamConnection._lite_head``). Trailers need ``on_header``: a chunked
    response is handed to the full parser before its body starts."""

    __slots__ = ("conn",)

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn

    def on_message_begin(self) -> None:
        if self.conn.message_done:
            raise UpstreamProtocolError("upstream sent data after the end of the response")

    def on_headers_complete(self) -> None:
        self.conn._lite_head()

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn.on_message_complete()


class UpstreamConnection(WriteFlow):
    """One keep-alive connection to a target. Not safe for concurrent exchanges."""

    __slots__ = (
        "_batch",
        "_body",
        "_can_write",
        "_cl",
        "_close_delimited",
        "_conn_value",
        "_cur",
        "_full",
        "_head",
        "_head_chunks",
        "_head_deadline",
        "_head_fut",
        "_head_only",
        "_head_seen",
        "_headers",
        "_hop",
        "_lite",
        "_read_timeout",
        "_reason",
        "_redo",
        "_soon",
        "_sweeper",
        "_te",
        "awaiting_client",
        "closed",
        "created",
        "deadline",
        "idle_since",
        "informational",
        "last_io",
        "loop",
        "message_done",
        "now",
        "parser",
        "received_any",
        "sink",
        "transport",
        "tunnel",
        "tunnel_eof",
        "uses",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: ``loop.time`` bound once: compiled code calls it without a method lookup
        self.now: Callable[[], float] = loop.time
        self.transport: asyncio.Transport | None = None
        #: the parser in use: ``_full`` (a callback per field), or ``_lite`` for a sink that
        #: takes raw heads (created on first use, dropped when it stops mid-message)
        self.parser = self._full = httptools.HttpResponseParser(self)
        self._lite: httptools.HttpResponseParser | None = None
        #: the bytes being fed (``_lite_head`` reads the head out of them)
        self._cur = b""
        #: the received pieces of a raw head that has not ended yet
        self._head_chunks: list[bytes] | None = None
        #: the last raw head read on this connection (reused)
        self._head = RawHead()
        #: the lite parser stopped on a head it does not take (see ``Reparse``)
        self._redo = False
        self.closed = False
        self.created = loop.time()
        self.idle_since = self.created
        self.uses = 0
        self._can_write: asyncio.Future[None] | None = None
        self._head_fut: asyncio.Future[ResponseHead] | None = None
        self._body: BodyStream | None = None
        #: callback mode (instead of ``_head_fut`` + ``_body``), see :class:`ResponseSink`
        self.sink: ResponseSink | None = None
        #: the final (non-1xx) response head of the current exchange was parsed
        self._head_seen = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_only = False
        self.message_done = True
        self.received_any = False
        #: called with each 1xx (not 101) response head; default drops them
        self.informational: Callable[[ResponseHead], None] | None = None
        #: in tunnel mode, bytes from the upstream go straight to this callback
        self.tunnel: Callable[[bytes], None] | None = None
        #: in tunnel mode, called when the upstream half-closes its side
        self.tunnel_eof: Callable[[], None] | None = None
        #: loop time of the next timeout check (see ``portway.http.sweeper``)
        self.deadline = NEVER
        self._sweeper = sweeper_for(loop)
        self._read_timeout = 0.0
        self._head_deadline = 0.0
        self.last_io = 0.0
        self._close_delimited = False
        #: a hop-by-hop field other than a plain Connection value, or Via (the head must be
        #: filtered field by field); ``special`` for the general path adds any Connection
        self._hop = False
        self._te: bytes | None = None
        self._cl: bytes | None = None
        self._conn_value: bytes | None = None
        self._soon: list[bytes] | None = None
        self._batch = None
        #: the request body's sender is waiting for the client's next bytes: the upstream is
        #: not the one holding the exchange up (no read timeout; see ``expired``)
        self.awaiting_client = False
        #: an unexpected exception (a Portway bug) raised inside a parser callback
        self._bug: Exception | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        # watched for life; an exchange only moves ``deadline`` (no set churn per request)
        self._sweeper.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.closing = True
        self.drop_soon_writes()
        self._cancel_timer()
        self._sweeper.unwatch(self)
        err = UpstreamResetError(
            f"upstream closed the connection{': ' + str(exc) if exc else ''}",
            received=self.received_any,
        )
        sink = self.sink
        if sink is not None and not self.message_done:
            if self._head_seen and self._close_delimited:
                self.last_io = self.now()  # the response ends now
                self.message_done = True
                sink.on_end()
                sink.settle()
            else:
                sink.on_error(err)
        if self._head_fut is not None and not self._head_fut.done():
            self._head_fut.set_exception(err)
        if self._body is not None and not self.message_done:
            if self._head_only:
                pass
            elif not self.parser_expects_close():
                self._body.set_exception(err)
            else:
                self._body.feed_eof()
        w = self._can_write
        if w is not None and not w.done():
            w.set_exception(err)
        if self.tunnel is not None:
            self.tunnel(b"")

    def parser_expects_close(self) -> bool:
        # a response without Content-Length or chunked framing ends at connection close
        return self._close_delimited

    def data_received(self, data: bytes) -> None:
        self.last_io = self.now()
        if self.tunnel is not None:
            self.tunnel(data)
            return
        self.received_any = True
        self._feed(data)
        if self._head_only and not self.message_done and self._head_seen:
            # a response to HEAD has no body whatever its framing headers say
            self.message_done = True
            self._cancel_timer()
            if self.parser is self._lite:
                self._lite = None
            else:
                self._full = httptools.HttpResponseParser(self)
            self.parser = self._full
            if self._body is not None:
                self._body.feed_eof()
            if self.sink is not None:
                self.sink.on_end()
        sink = self.sink
        if sink is not None:
            sink.settle()

    def _feed(self, data: bytes) -> None:
        # this exchange reads its head through the lite parser, and the head has not ended
        raw = not self._head_seen and self.parser is self._lite
        if raw:
            chunks = self._head_chunks
            if chunks is not None:
                chunks.append(data)
            self._cur = data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = e.args[0] if e.args else len(data)
            tail = data[offset:] if isinstance(offset, int) else b""
            fut = self._head_fut
            if fut is not None and fut.done() and not fut.cancelled():
                fut.result().upgrade_tail = tail
        except httptools.HttpParserError as e:
            if raw and self._redo:
                # (a flag, not ``e.__context__``: raising sets that to whatever exception
                # is being handled around the loop's callback, if any)
                self._reparse()
                return
            bug, self._bug = self._bug, None
            if bug is not None:
                # a bug in Portway, not an invalid response: never blamed on the target
                # (a GatewayError is no upstream outcome: a logged 500, no health record)
                log.error(
                    "internal error while reading an upstream response",
                    exc_info=(type(bug), bug, bug.__traceback__),
                )
                self._fail(GatewayError("internal error"))
                return
            self._fail(UpstreamProtocolError(f"invalid response from upstream: {e}"))
            return
        if raw and not self._head_seen and self._head_chunks is None:
            self._head_chunks = [data]

    def _reparse(self) -> None:
        """The lite parser met a head it does not take (1xx, a hop-by-hop field, Via,
        Transfer-Encoding): parse the response again from its first byte, field by field."""
        chunks = self._head_chunks
        data = b"".join(chunks) if chunks is not None else self._cur
        self._head_chunks = None
        self._redo = False
        self._lite = None  # it stopped mid-message
        self.parser = self._full
        self._feed(data)

    def eof_received(self) -> bool | None:
        if self.tunnel_eof is not None:
            self.tunnel_eof()
            return True
        self.closing = True  # the transport closes itself on this answer
        return None

    # --- llhttp callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.message_done:
            # bytes after the end of the response (a lying Content-Length, or an unsolicited
            # response): reusing this connection would hand them to the next exchange
            raise UpstreamProtocolError("upstream sent data after the end of the response")
        self._headers = []
        self._reason = b""
        self._hop = False
        self._te = None
        self._cl = None
        self._conn_value = None

    def on_status(self, status: bytes) -> None:
        self._reason = self._reason + status if self._reason else status

    def on_header(self, name: bytes, value: bytes) -> None:
        if value and value[-1] <= 32:
            # llhttp drops leading OWS only; RFC 9110 §5.5: the value has none either side
            value = value.rstrip(b" \t")
        if self._head_seen:
            # trailer section of a chunked response
            if self.sink is not None:
                self.sink.on_trailer(name.lower(), value)
                return
            if self._body is None:
                return
            if self._body.trailers is None:
                self._body.trailers = Headers()
            self._body.trailers.add_raw(name.lower(), value)
            return
        n = name.lower()
        size = len(n)
        # the length first: most names (Date, Server, Content-Type) are then never hashed
        if size < 20 and _SPECIAL_SIZES[size] and n in SPECIAL:
            if n == b"content-length":
                self._cl = value
            else:
                if n == b"connection":
                    cv = self._conn_value
                    self._conn_value = value if cv is None else cv + b", " + value
                    if value not in PLAIN_CONNECTION:
                        self._hop = True
                else:
                    self._hop = True
                    if n == b"transfer-encoding":
                        self._te = value
        self._headers.append((n, value))

    def on_headers_complete(self) -> None:
        try:
            self._headers_complete()
        except Exception as exc:
            self._note(exc)
            raise

    def _note(self, exc: Exception) -> None:
        """Keep an exception raised inside a parser callback that is not one of ours about
        the response (httptools re-wraps it as a parse error): it is a bug."""
        if not isinstance(exc, (UpstreamProtocolError, Reparse)):
            self._bug = exc

    def _headers_complete(self) -> None:
        status = self.parser.get_status_code()
        te = self._te
        cl_raw = self._cl
        chunked = te is not None
        if te is not None and te.strip().lower() != b"chunked":
            # we de-chunk and re-frame, and cannot undo other codings: relaying the body
            # without its Transfer-Encoding would corrupt it
            raise UpstreamProtocolError("unsupported transfer coding from upstream")
        if cl_raw is not None and chunked:
            cl_raw = None
        if 100 <= status < 200 and status != 101:
            if self.sink is not None:
                self.sink.on_info(status, self._reason, self._headers)
            elif self.informational is not None:
                self.informational(
                    ResponseHead(status, self._reason, Headers(self._headers), True, False, None)
                )
            return
        no_body = body_forbidden(self._head_only, status)  # 101 included: the body is the tunnel's
        self._close_delimited = not no_body and not chunked and cl_raw is None
        self._head_seen = True
        keep_alive = bool(self.parser.should_keep_alive()) and not self._close_delimited
        if self.sink is not None:
            self.sink.on_head(
                status,
                self._reason,
                self._headers,
                keep_alive,
                chunked,
                cl_raw,
                self._hop,
                self._conn_value,
            )
            return
        head = ResponseHead(
            status=status,
            reason=self._reason,
            headers=Headers.adopt(self._headers),
            keep_alive=keep_alive,
            chunked=chunked,
            content_length=int(cl_raw) if cl_raw is not None else None,
            special=self._hop or self._conn_value is not None,
            connection=self._conn_value,
        )
        fut = self._head_fut
        if fut is not None and not fut.done():
            fut.set_result(head)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            try:
                self.sink.on_body(body)
            except Exception as exc:
                self._note(exc)
                raise
        elif self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        if not self._head_seen or self.message_done:
            return  # end of a 1xx message (or of a HEAD response already ended)
        self.message_done = True
        self._cancel_timer()
        if self.sink is not None:
            try:
                self.sink.on_end()
            except Exception as exc:
                self._note(exc)
                raise
        elif self._body is not None:
            self._body.feed_eof()

    def _lite_head(self) -> None:
        """The lite parser's ``on_headers_complete``: the head's bytes go to
        :func:`~portway.http.rawhead.scan_head`; a plain head to ``sink.on_head_raw``,
        anything else back to the field-by-field parser (:class:`Reparse`, ``_redo``)."""
        chunks = self._head_chunks
        buf = b"".join(chunks) if chunks is not None else self._cur
        self._head_chunks = None
        h = self._head
        try:
            scan_head(buf, self._head_only, h)
        except Reparse:
            self._redo = True
            raise
        self._head_seen = True
        self._close_delimited = h.close_delimited
        sink = self.sink
        assert sink is not None
        try:
            sink.on_head_raw(h.status, h.reason, h.fields, h.keep_alive, h.content_length)
        except Exception as exc:
            self._note(exc)
            raise

    # --- exchange API ----------------------------------------------------------------------
    def begin(self, head_only: bool, read_timeout: float) -> BodyStream:
        """Prepare for one exchange; returns the body stream the response will fill."""
        self._reset(head_only, read_timeout)
        self._head_fut = self.loop.create_future()
        t = self.transport
        assert t is not None
        self._body = BodyStream(t.pause_reading, t.resume_reading)
        return self._body

    def begin_sink(self, sink: ResponseSink, head_only: bool, read_timeout: float) -> None:
        """Prepare for one exchange whose response goes to ``sink`` by callbacks."""
        self._reset(head_only, read_timeout)
        self.sink = sink
        if sink.raw_head:
            lite = self._lite
            if lite is None:
                lite = self._lite = httptools.HttpResponseParser(_Lite(self))
            self.parser = lite

    def _reset(self, head_only: bool, read_timeout: float) -> None:
        self.parser = self._full
        self._head_chunks = None
        self.uses += 1
        self.message_done = False
        self.received_any = False
        self._close_delimited = False
        self._head_seen = False
        self._head_only = head_only
        self._read_timeout = read_timeout

    def arm_read_timeout(self, head_deadline: float = 0.0, now: float = -1.0) -> None:
        """Start the exchange timer (after the request head was written): between-bytes read
        timeout, plus an absolute ``head_deadline`` (loop time) for the response head. One
        self-re-arming timer per exchange, instead of a timer reset per ``data_received``.
        ``now``: the loop time, when the caller has just read it."""
        self._head_deadline = head_deadline
        if self._read_timeout > 0 or head_deadline > 0:
            self.last_io = now if now >= 0 else self.now()
            self.deadline = self._next_due()

    def _next_due(self) -> float:
        due = self.last_io + self._read_timeout if self._read_timeout > 0 else float("inf")
        if self._head_deadline > 0 and not self._head_seen:
            due = min(due, self._head_deadline)
        return due

    def expired(self, now: float) -> None:
        """Sweeper callback: fail the exchange if a timeout really passed, else re-arm."""
        if self.closed or self.message_done:
            self._cancel_timer()
            return
        head_pending = not self._head_seen
        if self._head_deadline > 0 and head_pending and now >= self._head_deadline:
            self._cancel_timer()
            if self.awaiting_client:
                # the total time ran out while the client was still sending its body
                self._fail(RequestTimeoutError("request body not received in time"))
            else:
                self._fail(ReadTimeoutError("upstream response timeout"))
            return
        body = self._body
        # a body paused by flow control is waiting on the client, not on the upstream
        sink = self.sink
        waiting_on_client = (
            self.awaiting_client
            or (body is not None and body._paused)
            or (sink is not None and sink.paused)
        )
        due = self._next_due()
        if waiting_on_client or now < due:
            self.deadline = max(due, now + 0.05)
            return
        self._cancel_timer()
        self._fail(ReadTimeoutError("upstream read timeout"))

    def _cancel_timer(self) -> None:
        self.deadline = NEVER

    def _fail(self, exc: BaseException) -> None:
        sink = self.sink
        if sink is not None and not self.message_done:
            self.message_done = True
            sink.on_error(exc)
        if self._head_fut is not None and not self._head_fut.done():
            self._head_fut.set_exception(exc)
        if self._body is not None and not self.message_done:
            self._body.set_exception(exc)
        self.abort()

    async def read_head(self) -> ResponseHead:
        assert self._head_fut is not None
        return await self._head_fut

    def write(self, data: bytes | memoryview) -> None:
        t = self.transport
        if t is None or self.closed:
            raise UpstreamResetError("upstream connection is closed")
        if self._soon is not None:
            self.flush_soon_writes()
        t.write(data)

    @property
    def reusable(self) -> bool:
        return not self.closed and self.message_done and self.tunnel is None

    def finish(self) -> None:
        self._cancel_timer()
        self._head_fut = None
        self._body = None
        self.sink = None
        self.informational = None

    def abort(self) -> None:
        self.closed = True
        self.drop_soon_writes()
        self._cancel_timer()
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.flush_soon_writes()
            self.closing = True
            self.transport.close()


async def open_connection(
    host: str, port: int, timeout: float, ssl: Any = None, server_hostname: str | None = None
) -> UpstreamConnection:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, p = await loop.create_connection(
            lambda: as_protocol(UpstreamConnection(loop)),
            host,
            port,
            ssl=ssl,
            server_hostname=server_hostname if ssl else None,
        )
    return cast(UpstreamConnection, p)


def request_line(method: str, target: str) -> list[bytes]:
    """The pieces of an HTTP/1.1 request line, to append field lines to and join."""
    return [method.encode("ascii"), b" ", target.encode("latin-1"), b" HTTP/1.1\r\n"]


def request_line_parts(method: str, path: str, query: bytes) -> list[bytes]:
    """:func:`request_line` for a path and a raw query (``b""``: none), without building the
    target string first."""
    m = _METHOD_BYTES.get(method)
    parts = [m if m is not None else method.encode("ascii"), b" ", path.encode("latin-1")]
    if query:
        parts.append(b"?")
        parts.append(query)
    parts.append(b" HTTP/1.1\r\n")
    return parts


_METHOD_BYTES: Final = {m: m.encode() for m in METHODS}


def build_request_head(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = request_line(method, target)
    append_fields(parts, headers)
    parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(slots=True)
class SimpleResponse:
    status: int
    headers: Headers
    body: bytes


async def simple_request(
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
    max_body: int = 16 * 1024 * 1024,
    ssl: Any = None,
) -> SimpleResponse:
    """One request on a fresh connection (health probes, JWKS, introspection, exporters).
    ``ssl``: the context for ``https`` (default: verified against the system CAs)."""
    import ssl as _ssl

    u = urlsplit(url)
    https = u.scheme == "https"
    host = u.hostname or "127.0.0.1"
    port = u.port or (443 if https else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    async with asyncio.timeout(timeout):
        conn = await open_connection(
            host,
            port,
            timeout,
            ssl=(ssl or _ssl.create_default_context()) if https else None,
            server_hostname=host,
        )
        try:
            extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
            h: list[tuple[bytes, bytes]] = [(b"connection", b"close")]
            if not any(k == b"host" for k, _ in extra):
                h.insert(0, (b"host", (host if u.port is None else f"{host}:{port}").encode()))
            h += extra
            if body or method in ("POST", "PUT", "PATCH"):
                h.append((b"content-length", str(len(body)).encode()))
            stream = conn.begin(method == "HEAD", timeout)
            conn.write(build_request_head(method, target, h) + body)
            head = await conn.read_head()
            data = await stream.read_all(max_body)
            return SimpleResponse(head.status, head.headers, data)
        finally:
            conn.close()
