"""Upstream side of the data plane: an HTTP/1.1 client protocol on llhttp.

:class:`UpstreamConnection` carries one exchange at a time over a keep-alive connection owned by
a :class:`~portway.http.pool.ConnectionPool`; it is an explicit state machine (the table is in
its docstring, the states in ``http/clientstate.py``). The request is written by the caller
(``write``/``drain``); the response head arrives through ``read_head()`` and the body streams
into a flow-controlled :class:`~portway.http.body.BodyStream`, or both go to a
:class:`~portway.http.clientwire.ResponseSink` by callbacks (the task-free path).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, cast

import httptools

from portway.errors import GatewayError, RequestTimeoutError
from portway.http.body import BodyStream
from portway.http.clientparse import ClientParsing
from portway.http.clientsimple import SimpleResponse as SimpleResponse
from portway.http.clientsimple import open_connection as open_connection
from portway.http.clientsimple import simple_request as simple_request
from portway.http.clientstate import (
    ALLOWED,
    BODY,
    BROKEN,
    CLOSED,
    CONNECTING,
    DONE,
    HEAD,
    IDLE,
    NAMES,
)
from portway.http.clientwire import ResponseHead as ResponseHead
from portway.http.clientwire import ResponseSink as ResponseSink
from portway.http.clientwire import _Lite
from portway.http.clientwire import build_request_head as build_request_head
from portway.http.clientwire import request_line as request_line
from portway.http.clientwire import request_line_parts as request_line_parts
from portway.http.exceptions import ReadTimeoutError as ReadTimeoutError
from portway.http.exceptions import UpstreamProtocolError as UpstreamProtocolError
from portway.http.exceptions import UpstreamResetError as UpstreamResetError
from portway.http.flow import HIGH_WATER, LOW_WATER
from portway.http.rawhead import RawHead
from portway.http.serverstate import TRACE, illegal_transition
from portway.http.sweeper import NEVER, UNWATCHED, sweeper_for

log: Final = logging.getLogger("portway.http")


#: this module's own finals (compiled, read as C statics on every transition)
_ALLOWED: Final = ALLOWED
_TRACE: Final = TRACE


class UpstreamConnection(ClientParsing):
    """One keep-alive connection to a target. Not safe for concurrent exchanges.

    An explicit state machine (``http/clientstate.py``; ``state`` holds one, ``_to`` is the
    only writer and checks every transition against the table):

    ==========  ==================================================  ==========
    state       event                                               next
    ==========  ==================================================  ==========
    CONNECTING  ``connection_made``                                 IDLE
    IDLE        ``begin``/``begin_sink`` (an exchange starts)       HEAD
    IDLE        unsolicited bytes from the upstream                 BROKEN
    IDLE        ``close``/``abort`` (pool sweep), upstream closes   CLOSED
    HEAD        the final (non-1xx) response head is parsed         BODY
    HEAD        head timeout, invalid response                      BROKEN
    HEAD        ``close``/``abort``, upstream closes (reset)        CLOSED
    BODY        the message completes (or a HEAD response's head)   DONE
    BODY        the upstream closes a close-delimited body          DONE
    BODY        read timeout, invalid body                          BROKEN
    BODY        ``close``/``abort``, upstream closes (reset)        CLOSED
    DONE        ``finish`` (the exchange lets go)                   IDLE
    DONE        bytes after the end of the response                 BROKEN
    DONE        ``close``/``abort`` (not reusable, tunnel end)      CLOSED
    BROKEN      ``connection_lost``                                 CLOSED
    ==========  ==================================================  ==========

    Not states: the request is written by the caller during HEAD (and BODY: a response may
    begin before the request body ends); ``awaiting_client`` says the sender waits for the
    client's body (no read timeout then); after a 101 (DONE) the proxy's tunnel pipes bytes
    (``tunnel``); ``closing`` is the transport's closing (also after an answered EOF).
    ``closed`` (BROKEN or CLOSED) and ``message_done`` (not HEAD/BODY) are read from the
    state; ``reusable`` is IDLE or DONE without a tunnel.
    """

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
        "_headers",
        "_hop",
        "_lite",
        "_read_timeout",
        "_reason",
        "_redo",
        "_soon",
        "_sweeper",
        "_te",
        "_was",
        "awaiting_client",
        "created",
        "deadline",
        "due",
        "idle_since",
        "informational",
        "last_io",
        "loop",
        "now",
        "parser",
        "received_any",
        "sink",
        "state",
        "transport",
        "tunnel",
        "tunnel_eof",
        "uses",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._sweeper = sweeper_for(loop)
        #: ``loop.time``, bound once per loop: compiled code calls it without a lookup
        self.now: Callable[[], float] = self._sweeper.clock
        self.transport: asyncio.Transport | None = None
        #: the parser in use: ``_full`` (a callback per field), or ``_lite`` for a sink that
        #: takes raw heads (created on first use, dropped when it stops mid-message)
        self.parser = self._full = httptools.HttpResponseParser(self)
        self._lite: httptools.HttpResponseParser | None = None
        #: the bytes being fed (the lite parser's ``on_headers_complete`` reads the head there)
        self._cur = b""
        #: the received pieces of a raw head that has not ended yet
        self._head_chunks: list[bytes] | None = None
        #: the last raw head read on this connection (reused)
        self._head = RawHead()
        #: the lite parser stopped on a head it does not take (see ``Reparse``)
        self._redo = False
        self.state = CONNECTING
        #: the state before BROKEN/CLOSED (what was under way when it closed)
        self._was = CONNECTING
        #: BROKEN or CLOSED (kept by ``_to``; pools and exchanges read it)
        self.closed = False
        self.created = loop.time()
        self.idle_since = self.created
        self.uses = 0
        self._can_write: asyncio.Future[None] | None = None
        self._head_fut: asyncio.Future[ResponseHead] | None = None
        self._body: BodyStream | None = None
        #: callback mode (instead of ``_head_fut`` + ``_body``), see :class:`ResponseSink`
        self.sink: ResponseSink | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_only = False
        self.received_any = False
        #: called with each 1xx (not 101) response head; default drops them
        self.informational: Callable[[ResponseHead], None] | None = None
        #: in tunnel mode, bytes from the upstream go straight to this callback
        self.tunnel: Callable[[bytes], None] | None = None
        #: in tunnel mode, called when the upstream half-closes its side
        self.tunnel_eof: Callable[[], None] | None = None
        #: loop time of the next timeout check (see ``portway.http.sweeper``)
        self.deadline = NEVER
        self.due = UNWATCHED
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

    # --- the state machine --------------------------------------------------------------------
    def _to(self, new: int) -> None:
        """The one place the state changes (see the table in the class docstring)."""
        old = self.state
        if not (_ALLOWED >> (old * 8 + new)) & 1:
            illegal_transition("upstream", NAMES, old, new)
        if new >= BROKEN:
            if old < BROKEN:
                self._was = old
            self.closed = True
        self.state = new
        seen = _TRACE.seen_up
        if seen is not None:
            seen.add((old, new))

    def _in_progress(self) -> bool:
        """A response is (or was, when the connection closed) under way and nobody was told
        it ended: HEAD/BODY, or closed by its owner from there; an exchange ``_fail`` ended
        with a sink is over (the sink was told)."""
        s = self.state
        if s >= BROKEN:
            if s == BROKEN and self.sink is not None:
                return False
            s = self._was
        return s in (HEAD, BODY)

    @property
    def message_done(self) -> bool:
        """No response is in progress (not HEAD nor BODY)."""
        s = self.state
        return s != HEAD and s != BODY

    def _set_deadline(self, deadline: float) -> None:
        """Move the timeout; one earlier than the sweeper's bucket is re-filed."""
        self.deadline = deadline
        if deadline < self.due:
            self._sweeper.refile(self)

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._to(IDLE)
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        # watched for life; an exchange only moves ``deadline`` (no set churn per request)
        self._sweeper.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        old = self.state
        in_progress = self._in_progress()
        ends = (
            in_progress and self._close_delimited and (self._was if old >= BROKEN else old) == BODY
        )
        if old == BODY and self._close_delimited:
            self._to(DONE)  # the response ends with the connection
        if self.state != CLOSED:
            self._to(CLOSED)
        self.closing = True
        self.drop_soon_writes()
        self._cancel_timer()
        self._sweeper.unwatch(self)
        err = UpstreamResetError(
            f"upstream closed the connection{': ' + str(exc) if exc else ''}",
            received=self.received_any,
        )
        sink = self.sink
        if sink is not None and in_progress:
            if ends:
                self.last_io = self.now()  # the response ends now
                in_progress = False
                sink.on_end()
                sink.settle()
            else:
                sink.on_error(err)
        if self._head_fut is not None and not self._head_fut.done():
            self._head_fut.set_exception(err)
        if self._body is not None and in_progress:
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
        if self._head_only and self.state == BODY:
            # a response to HEAD has no body whatever its framing headers say
            self._to(DONE)
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
        raw = self.state == HEAD and self.parser is self._lite
        if raw:
            chunks = self._head_chunks
            if chunks is not None:
                chunks.append(data)
            else:
                h = self._head
                if h.replay == len(data) and not self._head_only and data.startswith(h.last):
                    self._replay(data, h)
                    return
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
            self._parse_failed(e)
            return
        if raw and self.state == HEAD and self._head_chunks is None:
            self._head_chunks = [data]

    def _parse_failed(self, e: Exception) -> None:
        """The parse stopped: on a Portway bug (``_bug``) or on an invalid response."""
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

    def _replay(self, data: bytes, h: RawHead) -> None:
        """``data`` is one whole response: the head the lite parser last accepted
        (``h.last``, byte for byte) and exactly its Content-Length body (``h.replay``).
        The sink gets the callbacks llhttp would make, in its order, with the values
        :func:`~portway.http.rawhead.scan_head` would give (it remembered them), and llhttp
        is not fed: it would validate the same bytes from the same state (the start of a
        message: the lite parser is only used from there), count the body and end the
        message keep-alive, back at the start. An exception in a callback is what it is on
        the parser (``_note``, ``_parse_failed``)."""
        sink = self.sink
        assert sink is not None
        try:
            # (``scan_head``'s own answer to a remembered head: its runs, never mutated)
            fields = h.fields = h.last_fields
            h.again = True
            self.head_parsed(False)
            sink.on_head_raw(h.status, h.reason, fields, h.keep_alive, h.content_length)
            start = len(h.last)
            if len(data) > start:
                sink.on_body(data[start:])
            # ``on_message_complete``
            if self.state == BODY:
                self._to(DONE)
                self._cancel_timer()
                sink.on_end()
        except Exception as exc:
            self._note(exc)
            self._parse_failed(exc)

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

    def head_parsed(self, close_delimited: bool) -> None:
        """The final response head was parsed (HEAD → BODY); ``close_delimited``: its body
        ends when the connection does."""
        self._to(BODY)
        self._close_delimited = close_delimited

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
        self._to(HEAD)
        self.received_any = False
        self._close_delimited = False
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
            self._set_deadline(self._next_due())

    def _next_due(self) -> float:
        due = self.last_io + self._read_timeout if self._read_timeout > 0 else float("inf")
        if self._head_deadline > 0 and self.state == HEAD:
            due = min(due, self._head_deadline)
        return due

    def expired(self, now: float) -> None:
        """Sweeper callback: fail the exchange if a timeout really passed, else re-arm."""
        s = self.state
        if s != HEAD and s != BODY:
            self._cancel_timer()
            return
        head_pending = s == HEAD
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

    def _fail(self, exc: BaseException) -> None:
        in_progress = self._in_progress()
        if self.state < BROKEN:
            self._to(BROKEN)
        sink = self.sink
        if sink is not None and in_progress:
            in_progress = False
            sink.on_error(exc)
        if self._head_fut is not None and not self._head_fut.done():
            self._head_fut.set_exception(exc)
        if self._body is not None and in_progress:
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
        s = self.state
        return (s in (IDLE, DONE, CONNECTING)) and self.tunnel is None

    def finish(self) -> None:
        """The exchange lets go of the connection (DONE → IDLE; in any other state it is
        not reusable and its owner closes it)."""
        if self.state == DONE:
            self._to(IDLE)
        self._cancel_timer()
        self._head_fut = None
        self._body = None
        self.sink = None
        self.informational = None

    def abort(self) -> None:
        if IDLE <= self.state < BROKEN:
            self._to(CLOSED)
        self.drop_soon_writes()
        self._cancel_timer()
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if IDLE <= self.state < BROKEN:
            self._to(CLOSED)
        self._cancel_timer()
        if self.transport is not None:
            self.flush_soon_writes()
            self.closing = True
            self.transport.close()
