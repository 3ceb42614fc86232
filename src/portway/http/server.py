"""Client side of the data plane: an HTTP/1.1 server protocol on llhttp.

:class:`ServerConnection` is the connection's state machine (the table is in its docstring,
the states in ``http/serverstate.py``); parsing (the llhttp callbacks and request building,
with the checks llhttp leaves to us: version, Host, transfer codings, size limits) is its
base :class:`~portway.http.serverparse.ServerParsing`. Parsed requests are queued and handed,
one at a time and in order, to an :class:`App`; pipelined requests are therefore answered in
order. The timeouts (header, idle, body) are deadlines checked by ``http/sweeper.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import httptools

from portway.errors import BadRequestError, GatewayError, RequestTimeoutError
from portway.http.exceptions import ClientDisconnectedError as ClientDisconnectedError
from portway.http.flow import adopt_transport, as_protocol
from portway.http.forwarded import ForwardMemo, TrustedProxies
from portway.http.limits import ServerLimits
from portway.http.models import Request
from portway.http.serverapi import App as App
from portway.http.serverapi import CallbackExchange as CallbackExchange
from portway.http.serverapi import ClientConnection as ClientConnection
from portway.http.serverapi import Resumed as Resumed
from portway.http.serverlite import hooks_for
from portway.http.serverparse import NO_HEADERS
from portway.http.serverparse import _Abort as _Abort
from portway.http.serverparse import _parse_host as _parse_host
from portway.http.serversimple import serve_simple as serve_simple
from portway.http.serverstate import (
    ALLOWED,
    CLOSED,
    CLOSING,
    FAST,
    H2,
    HEAD,
    IDLE,
    NAMES,
    TASK,
    TRACE,
    illegal_transition,
)
from portway.http.serverwrite import ServerWriting
from portway.http.sweeper import NEVER, UNWATCHED, sweeper_for
from portway.http.validate import INVALID_TARGET

log: Final = logging.getLogger("portway.http")


#: ``ServerConnection.extra`` of a connection without values (never written)
_NO_EXTRA: Final[dict[str, Any]] = {}


#: this module's own finals (compiled, read as C statics on every transition)
_ALLOWED: Final = ALLOWED
_TRACE: Final = TRACE


class ServerConnection(ServerWriting):
    """One client connection: an explicit state machine. All methods run on the event loop
    thread.

    States (``http/serverstate.py``; ``state`` holds one, ``_to`` is the only writer):

    ========  =================================================  ========
    state     event                                              next
    ========  =================================================  ========
    HEAD      (initial) connection made: header timeout runs     HEAD
    HEAD      head complete, the app takes it task-free          FAST
    HEAD      head complete (or the app hands it over)           TASK
    HEAD      ALPN ``h2`` or the h2c preface                     H2
    HEAD      header timeout, EOF, parse error, ``close``        CLOSING
    IDLE      bytes of an incomplete head arrive                 HEAD
    IDLE      a whole head arrives, taken task-free              FAST
    IDLE      a whole head arrives (or handed over)              TASK
    IDLE      idle timeout, EOF, parse error, ``close``          CLOSING
    TASK      queue ran dry, keep-alive                          IDLE
    TASK      not keep-alive, an error, ``close``/``abort``      CLOSING
    FAST      ``fast_done``, queue empty                         IDLE
    FAST      ``fast_done``, next queued request task-free       FAST
    FAST      ``fast_fallback``, or next queued one to the task  TASK
    FAST      ``fast_done(keep=False)``, ``abort``               CLOSING
    CLOSING   ``connection_lost``                                CLOSED
    (any)     ``connection_lost`` (but CLOSED, H2)               CLOSED
    ========  =================================================  ========

    Not states, on purpose (they hold *alongside* one): the body of the request being
    served streams in during TASK/FAST (``_body``, with its body timeout); a pipelined head
    is parsed during TASK/FAST (``_in_headers``, queued); the client half-closed while a
    request is served (``_eof_seen``: CLOSING once it is answered); reading is paused because
    too many pipelined requests wait (``_paused``); the response being written is chunked
    (``_chunked_out``); an Upgrade head was read (``upgrade_buffer``) and, once the handler
    (in TASK) has set ``tunnel``, client bytes are piped. ``closed`` (CLOSED or H2) and
    ``closing`` (CLOSING or CLOSED) mirror the state for the writers that read them; ``_to``
    keeps them in step.

    Memory: an idle keep-alive connection is what the gateway holds most of (issue 26), so
    what is not needed between requests is made on first need (the pipelining queue,
    ``extra``, the forwarding memo) or shared per loop (the clock), and the last request's
    parse state is dropped when the connection idles.
    """

    def __init__(
        self,
        app: App,
        limits: ServerLimits,
        trusted: TrustedProxies,
        scheme: str = "http",
        loop: asyncio.AbstractEventLoop | None = None,
        http2: bool = False,
        underscores: bool | None = None,
    ) -> None:
        self.app = app
        self.state = HEAD
        #: the listener's ``underscores_in_headers`` (``http/owned.py``); None: no rule
        #: (the admin API and other internal servers see fields as sent)
        self.underscores = underscores
        #: switch to HTTP/2 on ALPN ``h2`` or the h2c prior-knowledge preface
        self.http2 = http2
        self._preface = b""
        self.limits = limits
        # copied out of the pydantic model, whose attribute reads cost several times more
        self._max_uri = limits.max_uri_bytes
        self._max_header_bytes = limits.max_header_bytes
        self._max_header_count = limits.max_header_count
        self._max_pipelined = limits.max_pipelined
        self._header_timeout = limits.header_timeout
        self._idle_timeout = limits.idle_timeout
        self._body_timeout = limits.body_timeout
        self.trusted = trusted
        self._trusts = bool(trusted)
        #: this connection's memo of added X-Forwarded-*/Via bytes (see ``forward_memo``)
        self._memo: ForwardMemo | None = None
        self.scheme = scheme
        self.loop = loop or asyncio.get_running_loop()
        self._sweeper = sweeper_for(self.loop)
        #: ``loop.time``, bound once per loop: compiled code calls it without a lookup
        self.now = self._sweeper.clock
        self.transport: asyncio.Transport | None = None
        #: the loop's shared callback object (see ``ParserHooks``)
        self._hooks = hooks_for(self.loop)
        self.parser = httptools.HttpRequestParser(self._hooks.protocol)
        self.peer_ip = ""
        self.peer_port = 0
        self.server_port = 0
        self.closed = False
        self._extra: dict[str, Any] | None = None
        #: the listener's name (BFF profiles may match on it); set by the listener factory
        self.listener = ""
        #: ``Alt-Svc`` value every response head carries (a listener with an HTTP/3
        #: endpoint, ``server/quic.py``); set by the listener factory
        self.alt_svc = None
        #: requests parsed while one is served (pipelining); None until the first such
        self._queue = None
        #: the callback exchange in progress (FAST), told when the client goes away
        self.exchange: CallbackExchange | None = None
        #: one long-lived worker task per connection, parked on ``_waiter`` between requests:
        #: waking a future is cheaper than creating a task for every request
        self._worker: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.deadline = NEVER
        self.due = UNWATCHED
        self._can_write: asyncio.Future[None] | None = None
        self._paused = False
        # per-message parse state (ServerParsing)
        self._url = b""
        self._headers = NO_HEADERS
        self._header_bytes = 0
        self._host = None
        self._hosts = 0
        self._te = None
        self._cl = None
        self._expect = None
        self._conn = None
        self._upgrade = None
        self._pconn = False
        self._qmark = -2
        self._lite_at = -1
        self._lite_ok = True
        self._body = None
        self._body_limit = limits.max_body_bytes
        self._in_headers = False
        #: bytes received after an Upgrade request head; consumed by the tunnel
        self.upgrade_buffer: bytearray | None = None
        #: in tunnel mode, client bytes go straight to this callback
        self.tunnel: Callable[[bytes], None] | None = None
        #: in tunnel mode, called when the client half-closes its side
        self.tunnel_eof: Callable[[], None] | None = None
        self.requests = 0
        self._body_seen = -1
        self._pending = None
        self._bug = None
        self._chunked_out = False
        self._eof_seen = False
        self._chunk = b""
        self._boundary = True
        self._line = b""

    # --- the state machine --------------------------------------------------------------------
    def _to(self, new: int) -> None:
        """The one place the state changes (see the table in the class docstring)."""
        old = self.state
        if not (_ALLOWED >> (old * 8 + new)) & 1:
            illegal_transition("client", NAMES, old, new)
        self.state = new
        if new >= CLOSING:
            if new != H2:
                self.closing = True
            if new != CLOSING:
                self.closed = True
        seen = _TRACE.seen
        if seen is not None:
            seen.add((old, new))

    @property
    def busy(self) -> bool:
        """A request is being served (TASK or FAST)."""
        return self.state == TASK or self.state == FAST

    @property
    def extra(self) -> dict[str, Any]:
        """Per-connection values of the gateway (the peer certificate); read-only (only
        ``connection_made`` sets them). Without any, a shared empty dict: the handlers ask
        ``if conn.extra`` on every request, and a dict per connection is 64 bytes kept."""
        e = self._extra
        return _NO_EXTRA if e is None else e

    @property
    def forward_memo(self) -> ForwardMemo:
        """This connection's memo of added X-Forwarded-*/Via bytes
        (``forward_header_lines``), made on first use."""
        m = self._memo
        if m is None:
            m = self._memo = ForwardMemo()
        return m

    def _owned_headers(self) -> frozenset[bytes]:
        return self.app.owned_headers()

    def _fields_unread(self) -> bool:
        return self.app.fields_unread()

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t, self.peer_ip, self.peer_port, self.server_port = adopt_transport(transport)
        self.transport = t
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is not None:
            cert = ssl_obj.getpeercert()
            if cert:
                self._extra = {
                    "peercert": cert,
                    "peercert_der": ssl_obj.getpeercert(binary_form=True),
                }
        # HEAD from the start: the first request's header timeout runs from the connection on
        self._arm(self._header_timeout)
        self._sweeper.watch(self)
        self.app.connection_opened()
        if self.http2 and ssl_obj is not None and ssl_obj.selected_alpn_protocol() == "h2":
            self._switch_to_h2(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state >= CLOSED:  # CLOSED, H2: already told, or no longer ours
            return
        self._to(CLOSED)
        self.drop_soon_writes()
        self._disarm()
        self._sweeper.unwatch(self)
        if self._body is not None:
            self._body.set_exception(ClientDisconnectedError("client disconnected"))
        w = self._can_write
        if w is not None and not w.done():
            w.set_exception(ClientDisconnectedError("client disconnected"))
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.client_lost()
        if self.tunnel is not None:
            self.tunnel(b"")
        self.app.connection_closed()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel(data)
            return
        if (
            self.http2
            and self.requests == 0
            and not self._in_headers
            and (self._preface or data[:1] == b"P")
            and self._maybe_h2(data)
        ):
            return
        if self.upgrade_buffer is not None:
            self.upgrade_buffer += data
            return
        hooks = self._hooks
        if (
            self._boundary
            and self._lite_ok
            and data.endswith(b"\r\n\r\n")
            and hooks.feed_lite(self, data)
        ):
            # one whole head, read without a callback per field (http/serverlite.py)
            self._chunk = b""
            return
        # only bytes that begin at a message boundary can begin with a request line; one
        # split across reads (a slow client) is made whole for ``_version`` (its protocol)
        if self._boundary:
            self._chunk = data
        else:
            self._chunk = b""
            if self._line and self._line.find(b"\n") < 0:
                end = data.find(b"\n")
                self._line += data if end < 0 else data[: end + 1]
        prev = hooks.conn
        hooks.conn = self
        try:
            while True:
                try:
                    self.parser.feed_data(data)
                    break
                except httptools.HttpParserUpgrade as e:
                    offset = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
                    data = data[offset:]
                    if not self._skip_upgrade(hooks):
                        self.upgrade_buffer = bytearray(data)
                        self.transport.pause_reading() if self.transport else None
                        break
                    # an Upgrade ignored (serverparse): what follows its head is HTTP/1.1
        except httptools.HttpParserError as e:
            self.parse_failed(e)
        finally:
            hooks.conn = prev  # (a nested parse of another connection gets its own back)
        self._chunk = b""  # not kept past the read (it may be large)
        if self._in_headers and self.state == IDLE:
            # a request head is incomplete after this read: from now on the header timeout
            # runs (armed here rather than at its first byte, so a head that arrives whole,
            # the usual case, never reads the clock for it)
            self._to(HEAD)
            self._arm(self._header_timeout)

    def parse_failed(self, e: Exception) -> None:
        self._lite_ok = False  # (whatever follows is refused by the parser that stopped)
        if isinstance(e, httptools.HttpParserInvalidURLError):
            self._protocol_error(BadRequestError(INVALID_TARGET))
            return
        pending, self._pending = self._pending, None
        bug, self._bug = self._bug, None
        if pending is not None:
            self._protocol_error(pending)
        elif bug is not None:
            self._internal_error(bug)
        else:
            msg = str(e.args[0] if e.args else e)
            self._protocol_error(BadRequestError(f"malformed request: {msg}"))

    def eof_received(self) -> bool | None:
        if self.tunnel_eof is not None:
            # a tunnel passes the half-close on and keeps the other direction flowing
            self.tunnel_eof()
            return True
        body = self._body
        if body is not None:
            # the client ended mid-body: the message can never be complete, so it must not
            # be forwarded as if it were (and the upstream need not wait for a timeout)
            self._body = None
            body.set_exception(BadRequestError("request body ended before its declared length"))
        # a half-closed client may still be waiting for responses to pipelined requests
        s = self.state
        if s not in (TASK, FAST):
            if s < CLOSING:
                self._to(CLOSING)  # the transport closes itself on this answer
            return None
        self._eof_seen = True
        return True

    def _maybe_h2(self, data: bytes) -> bool:
        """Detect the h2c prior-knowledge preface; True when ``data`` was consumed."""
        from portway.http.h2engine import PREFACE

        buf = self._preface + data
        n = min(len(buf), len(PREFACE))
        if buf[:n] != PREFACE[:n]:
            if n > 16 and buf.startswith(PREFACE[:16]) and self.transport is not None:
                # "PRI * HTTP/2.0\r\n" then not the rest: a broken HTTP/2 client (GOAWAY)
                from portway.http.h2engine import goaway_bytes

                self.transport.write(goaway_bytes())
                self.close()
                return True
            if self._preface:
                # the held-back bytes were an HTTP/1.1 request after all
                self._preface = b""
                self.data_received(buf)
                return True
            return False
        if n < len(PREFACE):
            self._preface = buf
            return True
        self._preface = b""
        self._switch_to_h2(buf)
        return True

    def _switch_to_h2(self, data: bytes) -> None:
        from portway.http.h2engine import new_connection

        t = self.transport
        assert t is not None
        self._disarm()
        self._sweeper.unwatch(self)
        self.http2 = False
        # libnghttp2 when it loads, else the h2 library (http/h2engine.py)
        h = new_connection(
            self.app,
            self.limits,
            self.trusted,
            self.scheme,
            self.loop,
            self.extra,
            self.underscores,
        )
        h.alt_svc = self.alt_svc
        # this protocol is done; the app's connection count moves to the HTTP/2 connection
        self.transport = None
        self._to(H2)
        t.set_protocol(as_protocol(h))
        h.connection_made(t)
        if data:
            h.data_received(data)

    def _resume_body(self) -> None:
        if not self._paused and self.transport is not None:
            self.transport.resume_reading()

    # --- request queue -------------------------------------------------------------------------
    def _enqueue(self, item: Request | GatewayError) -> None:
        q = self._queue
        s = self.state
        busy = s in (TASK, FAST)
        if not busy and not q:
            # the usual keep-alive request: the queue would only be pushed and popped
            self._serve(item)
            return
        if q is None:
            q = self._queue = deque()
        q.append(item)
        if not busy:
            self._serve(q.popleft())
        elif len(q) > self._max_pipelined and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _serve(self, item: Request | GatewayError | Resumed) -> None:
        """Serve ``item`` (not busy; it was next): without a task when the app can (FAST),
        else by the worker task (TASK), at the head of the queue."""
        if isinstance(item, Request) and item.body is None:
            # FAST before the app looks: a callback exchange may also end inside try_fast
            # (an answer written at once, proxy/fast.py) and call fast_done, or hand the
            # request to the task (fast_fallback: TASK)
            self._to(FAST)
            if self.app.try_fast(self, item):
                return
        q = self._queue
        if q is None:
            q = self._queue = deque()
        q.appendleft(item)
        self._start_worker()

    def _start_worker(self) -> None:
        self._to(TASK)
        w = self._waiter
        if w is not None:
            self._waiter = None
            w.set_result(None)
        else:
            self._worker = self.loop.create_task(self._run())

    def fast_done(self, keep: bool, now: float = -1.0) -> None:
        """A callback exchange wrote its whole response; serve what queued up meanwhile.
        ``now``: the loop time, when the caller has just read it."""
        self.exchange = None
        if not keep or self.state != FAST:
            self.close()
            return
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        q = self._queue
        if q:
            self._serve(q.popleft())
        else:
            self._idle(now)

    def fast_fallback(self, resumed: Resumed) -> None:
        """A callback exchange cannot finish on its own (retry, error before the response
        head): the worker task takes it over, ahead of anything queued."""
        self.exchange = None
        q = self._queue
        if q is None:
            q = self._queue = deque()
        q.appendleft(resumed)
        self._start_worker()

    async def _run(self) -> None:
        try:
            while not self.closed:
                q = self._queue
                if not q:
                    if not self._idle():
                        return
                    self._waiter = self.loop.create_future()
                    await self._waiter
                    continue
                item = q.popleft()
                if self._paused and len(q) <= self._max_pipelined // 2:
                    self._paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                if isinstance(item, GatewayError):
                    self.send_error(item, close=True)
                    return
                if isinstance(item, Request):
                    keep = await self.app.handle(self, item)
                else:
                    keep = await item.run(self)
                if not keep:
                    self.close()
                    return
        except asyncio.CancelledError:
            pass
        except Exception:  # the app must never kill the connection silently
            log.exception("unhandled error while serving a request")
            self.close()
        finally:
            self._worker = None
            self._waiter = None

    def _idle(self, now: float = -1.0) -> bool:
        """The queue ran dry (TASK/FAST): go IDLE and arm the idle timeout; False when the
        connection is done instead. ``now``: the loop time, when the caller just read it."""
        if self.closed:
            return False
        if (self.upgrade_buffer is not None and self.tunnel is None) or self._eof_seen:
            # nothing more can arrive from a half-closed client: do not idle on it
            self.close()
            return False
        if self.transport is None or self.closing:
            return False
        self._to(IDLE)
        if not self._in_headers:  # (a pipelined head may be half parsed)
            self._forget_message()
        self._arm(self._idle_timeout, now)
        return True

    # --- timers -------------------------------------------------------------------------------
    def _arm(self, seconds: float, now: float = -1.0) -> None:
        if seconds <= 0:
            self.deadline = NEVER
        else:
            self._set_deadline((now if now >= 0 else self.now()) + seconds)

    def _disarm(self) -> None:
        self.deadline = NEVER

    def expired(self, now: float) -> None:
        """Sweeper callback: the deadline passed (the sweeper re-files a moved one)."""
        self.deadline = NEVER
        b = self._body
        if b is not None:
            # a body in progress: time out only if the client sent nothing since the last
            # check and we were not the ones holding it back (flow control)
            if b.received != self._body_seen or b._paused:
                self._body_seen = b.received
                self.deadline = now + self._body_timeout
                return
            self._body = None
            b.set_exception(RequestTimeoutError("request body timed out"))
            return
        self._on_timeout()

    def _on_timeout(self) -> None:
        s = self.state
        if s in (TASK, FAST) or self.tunnel is not None:
            return
        if self._in_headers and self.transport is not None and not self.closed:
            # slow or stalled request head (slowloris)
            self.send_error(RequestTimeoutError("request head not received in time"), close=True)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self.flush_soon_writes()
            self._to(CLOSING)
            self.transport.close()
        self._disarm()

    def abort(self) -> None:
        self.drop_soon_writes()
        if self.state < CLOSING:
            self._to(CLOSING)
        if self.transport is not None:
            self.transport.abort()
        self._disarm()
