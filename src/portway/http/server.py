"""Client side of the data plane: an HTTP/1.1 server protocol on llhttp.

:class:`ServerConnection` parses requests with llhttp (strict: it already rejects
Content-Length with Transfer-Encoding, duplicate or invalid Content-Length, obs-fold, bare LF
and control characters) and adds the checks llhttp leaves to us: version, Host, transfer
codings, size limits and timeouts. Parsed requests are queued and handed, one at a time and in
order, to an :class:`App`; pipelined requests are therefore answered in order.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import httptools

from portway.errors import (
    BadRequestError,
    GatewayError,
    HeadersTooLargeError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UriTooLongError,
)
from portway.http.body import BodyStream
from portway.http.exceptions import ClientDisconnectedError as ClientDisconnectedError
from portway.http.flow import WriteFlow, adopt_transport, as_protocol
from portway.http.forwarded import ForwardMemo, TrustedProxies
from portway.http.headers import Headers
from portway.http.limits import Limits, ServerLimits
from portway.http.memo import remember
from portway.http.models import Request, Response
from portway.http.owned import drop_underscored
from portway.http.path import normalize_path
from portway.http.requestid import request_id_of
from portway.http.sweeper import NEVER, sweeper_for
from portway.http.upgrade import is_websocket
from portway.http.validate import INVALID_TARGET
from portway.http.wire import METHODS, chunk, head_bytes, last_chunk

log: Final = logging.getLogger("portway.http")


class App:
    """What a :class:`ServerConnection` serves (subclass it).

    ``handle`` must write one complete response for ``request`` through the connection
    (``write``/``drain``) and return whether the connection may be kept alive.

    A base class, not a ``Protocol``: compiled, the per-request calls through it are direct.
    """

    async def handle(self, conn: ServerConnection, request: Request) -> bool:
        raise NotImplementedError

    def try_fast(self, conn: ServerConnection, request: Request) -> bool:
        """Serve ``request`` without a task when possible (callbacks only); True when taken.

        A taken request must end with exactly one :meth:`ServerConnection.fast_done` or
        :meth:`ServerConnection.fast_fallback` (which may come before this returns). Must
        never raise."""
        return False

    def owned_headers(self) -> frozenset[bytes]:
        """Request header names the current configuration makes the gateway set, beyond
        ``http/owned.py:OWNED`` (asked only for names containing ``_``)."""
        return frozenset()

    def connection_opened(self) -> None:
        pass

    def connection_closed(self) -> None:
        pass


class ClientConnection(Protocol):
    """What the proxy handler writes one response through: an HTTP/1.1
    :class:`ServerConnection` or an HTTP/2 stream (compiled code checks argument types, so
    the handler is typed with this, not with either class).

    The response-writer interface, which each protocol implements natively (HTTP/2 turns it
    into HEADERS/DATA frames, never parsing HTTP/1.1 bytes back):

    - ``send_info(status, reason, fields)``: an interim response (100, 103);
    - ``send_head(status, reason, fields, mode, body, end)``: the final head — ``fields``
      carry the framing fields ``http/relay.add_response_framing`` appended for ``mode``
      (``none``/``length``/``chunked``/``close``), ``body`` is the first body bytes (may be
      empty), ``end`` says they are the whole body; returns the bytes written for the head;
    - ``send_body(data)``: a body chunk (framed by the head's mode);
    - ``send_end(trailers)``: the body is complete (trailers, when the mode carries them);
    - ``abort()``: the response cannot be completed (HTTP/1.1: the connection is reset;
      HTTP/2: the stream is).

    ``write``/``write_soon`` stay for HTTP/1.1-only writers (the upgrade tunnel).
    """

    closed: bool
    extra: dict[str, Any]

    @property
    def _can_write(self) -> object | None: ...

    def send_info(self, status: int, reason: bytes, fields: list[tuple[bytes, bytes]]) -> None: ...

    def send_head(
        self,
        status: int,
        reason: bytes,
        fields: list[tuple[bytes, bytes]],
        mode: str,
        body: bytes,
        end: bool,
    ) -> int: ...

    def send_body(self, data: bytes) -> None: ...

    def send_end(self, trailers: Headers | None) -> None: ...

    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def write_soon(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Resumed(Protocol):
    """Work a callback exchange handed back to the connection's worker task."""

    async def run(self, conn: ServerConnection) -> bool: ...


class CallbackExchange(Protocol):
    """A callback exchange in progress on a connection (see :meth:`App.try_fast`)."""

    def client_lost(self) -> None: ...


class _Abort(Exception):
    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


#: llhttp's method names as the ``str`` a Request carries
_METHODS: Final[dict[bytes, str]] = {m.encode(): m for m in METHODS}


class ServerConnection(WriteFlow):
    """One client connection. All methods run on the event loop thread."""

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
        #: this connection's memo of added X-Forwarded-*/Via bytes (``forward_header_lines``)
        self.forward_memo = ForwardMemo()
        self.scheme = scheme
        self.loop = loop or asyncio.get_running_loop()
        #: ``loop.time`` bound once: compiled code calls it without a method lookup
        self.now: Callable[[], float] = self.loop.time
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer_ip = ""
        self.peer_port = 0
        self.server_port = 0
        self.closed = False
        self.extra: dict[str, Any] = {}
        #: the listener's name (BFF profiles may match on it); set by the listener factory
        self.listener = ""
        #: ``Alt-Svc`` value every response head carries (a listener with an HTTP/3
        #: endpoint, ``server/quic.py``); set by the listener factory
        self.alt_svc: bytes | None = None
        self._queue: deque[Request | GatewayError | Resumed] = deque()
        #: a request is being served (by the worker task or by a callback exchange)
        self._busy = False
        #: the callback exchange in progress, told when the client goes away
        self.exchange: CallbackExchange | None = None
        #: one long-lived worker task per connection, parked on ``_waiter`` between requests:
        #: waking a future is cheaper than creating a task for every request
        self._worker: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: loop time at which the header/idle timeout fires (checked by the sweeper)
        self.deadline = NEVER
        self._sweeper = sweeper_for(self.loop)
        self._can_write: asyncio.Future[None] | None = None
        self._paused = False
        # per-message parse state
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._host: bytes | None = None
        self._hosts = 0
        self._te: bytes | None = None
        self._cl: bytes | None = None
        self._expect: bytes | None = None
        self._conn: bytes | None = None
        self._upgrade: bytes | None = None
        self._body: BodyStream | None = None
        self._body_limit: int | None = limits.max_body_bytes
        self._in_headers = False
        #: bytes received after an Upgrade request head; consumed by the tunnel
        self.upgrade_buffer: bytearray | None = None
        #: in tunnel mode, client bytes go straight to this callback
        self.tunnel: Callable[[bytes], None] | None = None
        #: in tunnel mode, called when the client half-closes its side
        self.tunnel_eof: Callable[[], None] | None = None
        self.requests = 0
        self._body_seen = -1
        #: error raised inside an llhttp callback (httptools re-wraps callback exceptions)
        self._pending: GatewayError | None = None
        #: an unexpected exception (a bug) raised inside an llhttp callback
        self._bug: Exception | None = None
        #: the response being written takes the chunked coding (``send_head``'s mode)
        self._chunked_out = False
        self._eof_seen = False
        #: the bytes being parsed when they began at a message boundary, else b"" (for the
        #: request-line shortcut of ``_version``)
        self._chunk = b""
        #: the parser is between messages (the last one completed, the next not begun)
        self._boundary = True
        #: the bytes the current message began at the start of, or b"" (see ``_version``)
        self._line = b""
        #: the header timeout is armed for the current (incomplete) request head
        self._head_timer = False

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t, self.peer_ip, self.peer_port, self.server_port = adopt_transport(transport)
        self.transport = t
        ssl_obj = transport.get_extra_info("ssl_object")
        if ssl_obj is not None:
            cert = ssl_obj.getpeercert()
            if cert:
                self.extra["peercert"] = cert
                self.extra["peercert_der"] = ssl_obj.getpeercert(binary_form=True)
        self._head_timer = True  # the first request's head, from the connection on
        self._arm(self._header_timeout)
        self._sweeper.watch(self)
        self.app.connection_opened()
        if self.http2 and ssl_obj is not None and ssl_obj.selected_alpn_protocol() == "h2":
            self._switch_to_h2(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and self.transport is None:
            return
        self.closed = True
        self.closing = True
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
        # only bytes that begin at a message boundary can begin with a request line
        self._chunk = data if self._boundary else b""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
            self.upgrade_buffer = bytearray(data[offset:])
            self.transport.pause_reading() if self.transport else None
        except httptools.HttpParserInvalidURLError:
            self._protocol_error(BadRequestError(INVALID_TARGET))
        except httptools.HttpParserError as e:
            pending, self._pending = self._pending, None
            bug, self._bug = self._bug, None
            if pending is not None:
                self._protocol_error(pending)
            elif bug is not None:
                self._internal_error(bug)
            else:
                msg = str(e.args[0] if e.args else e)
                self._protocol_error(BadRequestError(f"malformed request: {msg}"))
        self._chunk = b""  # not kept past the read (it may be large)
        if self._in_headers and not self._head_timer and not self._busy:
            # a request head is incomplete after this read: from now on the header timeout
            # runs (armed here rather than at its first byte, so a head that arrives whole,
            # the usual case, never reads the clock for it)
            self._head_timer = True
            self._arm(self._header_timeout)

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
        if not self._busy:
            self.closing = True  # the transport closes itself on this answer
            return None
        self._eof_seen = True
        return True

    def _maybe_h2(self, data: bytes) -> bool:
        """Detect the h2c prior-knowledge preface; True when ``data`` was consumed."""
        from portway.http.h2 import PREFACE

        buf = self._preface + data
        n = min(len(buf), len(PREFACE))
        if buf[:n] != PREFACE[:n]:
            if n > 16 and buf.startswith(PREFACE[:16]) and self.transport is not None:
                # "PRI * HTTP/2.0\r\n" then not the rest: a broken HTTP/2 client (GOAWAY)
                from portway.http.h2 import goaway_bytes

                self.transport.write(goaway_bytes())
                self.transport.close()
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
        from portway.http.h2 import H2Connection

        t = self.transport
        assert t is not None
        self._disarm()
        self._sweeper.unwatch(self)
        self.http2 = False
        h = H2Connection(
            self.app,
            self.limits,
            self.trusted,
            self.scheme,
            self.loop,
            self.extra,
            self.underscores,
        )
        h.alt_svc = self.alt_svc
        # this protocol is done; the app's connection count moves to the H2Connection
        self.transport = None
        self.closed = True
        t.set_protocol(as_protocol(h))
        h.connection_made(t)
        if data:
            h.data_received(data)

    # --- llhttp callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._in_headers = True
        self._host = None
        self._hosts = 0
        self._te = self._cl = self._expect = self._conn = self._upgrade = None
        self._boundary = False
        # The first message of bytes that began at a message boundary starts at their first
        # byte; ``_build_request`` reads its version there (see ``_version``).
        self._line = self._chunk
        self._chunk = b""  # a later message of these bytes does not start at their start

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_uri:
            self._pending = UriTooLongError("request target too long")
            raise _Abort(self._pending)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_headers:
            body = self._body
            if body is not None:
                lname = name.lower()
                if lname in _FORBIDDEN_TRAILERS:
                    # RFC 9110 §6.5.1: an upstream merging trailers into the header section
                    # must never get framing, routing, auth or forwarding fields from a client
                    return
                if body.trailers is None:
                    body.trailers = Headers()
                body.trailers.add_raw(lname, value)
            return
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_header_bytes:
            self._pending = HeadersTooLargeError("request header section too large")
            raise _Abort(self._pending)
        if len(self._headers) >= self._max_header_count:
            self._pending = HeadersTooLargeError("too many request header fields")
            raise _Abort(self._pending)
        if value and value[-1] <= 32:
            # llhttp drops leading OWS only; RFC 9110 §5.5: the value has none either side
            value = value.rstrip(b" \t")
        n = name.lower()
        if (
            95 in n  # b"_" (an int needle: a byte search)
            and self.underscores is not None
            and drop_underscored(n, self.underscores, self.app.owned_headers())
        ):
            return
        self._headers.append((n, value))
        # the fields the framing needs, noted while parsing instead of searched for later;
        # told apart by first letter and equality (a set lookup would hash every new name)
        c = n[0]
        if c == 104:  # h
            if n == b"host":
                self._hosts += 1
                self._host = value
        elif c == 99:  # c
            if n == b"content-length":
                if self._cl is None:
                    self._cl = value
            elif n == b"connection":
                self._conn = value if self._conn is None else self._conn + b", " + value
        elif c == 116:  # t
            if n == b"transfer-encoding":
                # all codings count: "identity" then "chunked" is not plain chunked
                self._te = value if self._te is None else self._te + b", " + value
        elif c == 101 and n == b"expect" and self._expect is None:
            self._expect = value
        elif c == 117 and n == b"upgrade":  # u
            self._upgrade = value if self._upgrade is None else self._upgrade + b", " + value

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._head_timer = False
        if not self._busy:
            self._disarm()
        # (one handler and distinct names: compiled, two ``except ... as e`` clauses share one
        # variable typed by the first, and the second's assignment raised a TypeError)
        try:
            req = self._build_request()
        except Exception as exc:
            if isinstance(exc, _Abort):
                self._pending = exc.error
            elif isinstance(exc, GatewayError):
                self._pending = exc
            else:
                # a bug in Portway, not the client's fault: kept for a logged 500
                self._bug = exc
            raise
        self.requests += 1
        self._enqueue(req)

    def on_body(self, body: bytes) -> None:
        b = self._body
        if b is None:
            return
        b.feed(body)
        if self._body_limit is not None and b.received > self._body_limit:
            self._pending = PayloadTooLargeError("request body too large")
            b.set_exception(self._pending)
            raise _Abort(self._pending)

    def on_message_complete(self) -> None:
        self._boundary = True
        if self._body is not None:
            self._body.feed_eof()
            self._body = None
            if self._busy:
                self.deadline = NEVER

    # --- request construction ----------------------------------------------------------------
    def _build_request(self) -> Request:
        p = self.parser
        raw_method = p.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = raw_method.decode("ascii")
        version = self._version(raw_method)
        if version not in ("1.1", "1.0"):
            raise _Abort(BadRequestError(f"unsupported HTTP version {version}"))
        if method == "CONNECT":
            # a proxy tunnel to any host: not what a gateway offers (HTTP/2 answers the same)
            raise _Abort(
                GatewayError("CONNECT is not supported", status=501, code="not_implemented")
            )
        headers = Headers.adopt(self._headers)
        url = self._url
        if self._hosts > 1:
            raise _Abort(BadRequestError("multiple Host header fields"))
        host_raw = self._host
        if url.startswith(b"/"):
            if 63 in url:  # b"?"
                raw_path, _, query = url.partition(b"?")
            else:
                raw_path, query = url, b""
        elif url == b"*":
            raise _Abort(BadRequestError("asterisk-form request target is not supported"))
        else:
            try:
                # Any: httptools' stubs say bytes where it returns None (no userinfo, no
                # port), and compiled code would check the stub's types
                u: Any = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError as e:
                raise _Abort(BadRequestError("invalid request target")) from e
            if u.schema not in (b"http", b"https") or not u.host or u.userinfo:
                # RFC 9110 §4.2.4: userinfo in an http(s) URI is to be treated as an error
                raise _Abort(BadRequestError("invalid request target"))
            raw_path = u.path or b"/"
            query = u.query or b""
            authority = u.host + (b":%d" % u.port if u.port else b"")
            # RFC 9112 §3.2.2: the absolute-form authority replaces Host
            headers.remove("host")
            headers.add_raw(b"host", authority)
            host_raw = authority
        if host_raw is None:
            if version == "1.1":
                raise _Abort(BadRequestError("missing Host header"))
            host = ""
        else:
            host = _parse_host(host_raw)
        if 35 in url:  # b"#"; an int is a byte search, a bytes needle goes through an exception
            raise _Abort(BadRequestError("fragment in request target"))
        path = normalize_path(raw_path, allow_encoded_slashes=True)
        te = self._te
        cl_raw = self._cl
        chunked = False
        if te is not None:
            if version == "1.0":
                # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing
                raise _Abort(BadRequestError("Transfer-Encoding in an HTTP/1.0 request"))
            if te.strip().lower() != b"chunked":
                raise _Abort(BadRequestError("unsupported transfer coding"))
            chunked = True
        cl: int | None = None
        if cl_raw is not None:
            cl = int(cl_raw)
            if self._body_limit is not None and cl > self._body_limit:
                raise _Abort(PayloadTooLargeError("request body too large"))
        body: BodyStream | None = None
        if chunked or (cl is not None and cl > 0):
            t = self.transport
            assert t is not None
            body = BodyStream(t.pause_reading, self._resume_body)
            self._body = body
            self._body_seen = -1
            self.deadline = self.now() + self._body_timeout
        if self.trusted:
            client_ip, trusted = self.trusted.client_ip(self.peer_ip, headers)
        else:
            client_ip, trusted = self.peer_ip, False
        expect = self._expect
        conn = self._conn
        if version != "1.0":
            keep_alive = conn is None or conn.lower().find(b"close") < 0
        else:
            keep_alive = conn is not None and conn.lower().find(b"keep-alive") >= 0
        upgrade = False
        if p.should_upgrade():
            if is_websocket(self._upgrade):
                upgrade = True
            else:
                # not tunnelled (h2c, ...: http/upgrade.py): served as a plain request, and
                # the connection ends with it, since llhttp reads nothing after an upgrade
                keep_alive = False
        return Request(
            method=method,
            path=path,
            query=query,
            headers=headers,
            version=version,
            host=host,
            client_ip=client_ip,
            client_port=self.peer_port,
            scheme=self.scheme,
            raw_target=url,
            body=body,
            content_length=cl if not chunked else None,
            peer_ip=self.peer_ip,
            server_port=self.server_port,
            trusted_peer=trusted,
            expect_continue=expect is not None and expect.lower() == b"100-continue",
            upgrade=upgrade,
            keep_alive=keep_alive,
        )

    def _version(self, raw_method: bytes) -> str:
        """The request's HTTP version. httptools only offers it as a freshly formatted
        string (~3k instructions); when the request line is the first line of the bytes being
        parsed (``_line``), llhttp accepted exactly ``method SP target SP version CRLF``
        there, so the version sits right after the target it reported. Anything else (a
        line split across reads, leading empty lines, a pipelined request) asks the parser."""
        line = self._line
        if line:
            self._line = b""
            k = len(raw_method) + len(self._url) + 1
            if line[k : k + 11] == b" HTTP/1.1\r\n":
                return "1.1"
        return self.parser.get_http_version()

    def _resume_body(self) -> None:
        if not self._paused and self.transport is not None:
            self.transport.resume_reading()

    # --- request queue -------------------------------------------------------------------------
    def _enqueue(self, item: Request | GatewayError) -> None:
        if not self._busy and not self._queue:
            # the usual keep-alive request: the queue would only be pushed and popped
            self._serve(item)
            return
        self._queue.append(item)
        if not self._busy:
            self._dispatch()
        elif len(self._queue) > self._max_pipelined and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _dispatch(self) -> None:
        """Serve the head of the queue (not busy, queue not empty)."""
        self._serve(self._queue.popleft())

    def _serve(self, item: Request | GatewayError | Resumed) -> None:
        """Serve ``item`` (not busy; it was next): without a task when the app can, else by
        the worker task, at the head of the queue."""
        if isinstance(item, Request) and item.body is None:
            # busy before the app looks: a callback exchange may also end inside try_fast (an
            # answer written at once, proxy/fast.py) and call fast_done
            self._busy = True
            if self.app.try_fast(self, item):
                return
        self._queue.appendleft(item)
        self._start_worker()

    def _start_worker(self) -> None:
        self._busy = True
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
        self._busy = False
        if not keep or self.closed:
            self.close()
            return
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if self._queue:
            self._dispatch()
        else:
            self._idle(now)

    def fast_fallback(self, resumed: Resumed) -> None:
        """A callback exchange cannot finish on its own (retry, error before the response
        head): the worker task takes it over, ahead of anything queued."""
        self.exchange = None
        self._queue.appendleft(resumed)
        self._start_worker()

    async def _run(self) -> None:
        try:
            while not self.closed:
                if not self._queue:
                    self._busy = False
                    if not self._idle():
                        return
                    self._waiter = self.loop.create_future()
                    await self._waiter
                    continue
                item = self._queue.popleft()
                if self._paused and len(self._queue) <= self._max_pipelined // 2:
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
            self._busy = False
            self._worker = None
            self._waiter = None

    def _idle(self, now: float = -1.0) -> bool:
        """The queue ran dry: arm the idle timeout; False when the connection is done.
        ``now``: the loop time, when the caller has just read it."""
        if self.closed:
            return False
        if (self.upgrade_buffer is not None and self.tunnel is None) or self._eof_seen:
            # nothing more can arrive from a half-closed client: do not idle on it
            self.close()
            return False
        if self.transport is None or self.closing:
            return False
        self._head_timer = False
        self._arm(self._idle_timeout, now)
        return True

    # --- writing: the response-writer interface (see ClientConnection) --------------------
    def send_info(self, status: int, reason: bytes, fields: list[tuple[bytes, bytes]]) -> None:
        self.write(head_bytes(status, reason, fields))

    def send_head(
        self,
        status: int,
        reason: bytes,
        fields: list[tuple[bytes, bytes]],
        mode: str,
        body: bytes,
        end: bool,
    ) -> int:
        if self.transport is None or self.closed:
            raise ClientDisconnectedError("client disconnected")
        self._chunked_out = mode == "chunked"
        if self.alt_svc is not None:
            fields.append((b"alt-svc", self.alt_svc))
        data = head_bytes(status, reason, fields)
        if body:
            # one write for head + body: a syscall per response saved
            self.write_soon(data + (chunk(body) if self._chunked_out else body))
        else:
            self.write_soon(data)
        return len(data)

    def send_body(self, data: bytes) -> None:
        self.write(chunk(data) if self._chunked_out else data)

    def send_end(self, trailers: Headers | None) -> None:
        if self._chunked_out:
            self._chunked_out = False
            self.write(last_chunk(trailers))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        t = self.transport
        if t is None or self.closed:
            raise ClientDisconnectedError("client disconnected")
        if self._soon is not None:
            self.flush_soon_writes()
        t.write(data)

    def send_error(self, err: GatewayError, *, close: bool, request_id: str | None = None) -> None:
        """Answer ``err`` as JSON; every answer carries a request id (the client's own
        X-Request-ID when it sent a well-formed one before the error, else a new one)."""
        rid = request_id or request_id_of(self._headers)
        body = err.body(rid)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode("ascii")),
        ]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers]
        if close:
            headers.append((b"connection", b"close"))
        if self.transport is not None and not self.closed:
            self.flush_soon_writes()
            self.transport.write(head_bytes(err.status, b"", headers) + body)
        if close:
            self.close()

    def _internal_error(self, exc: Exception) -> None:
        """A bug raised inside a parser callback: logged with its traceback and answered 500
        (never a 400 blaming the client); the connection closes, as its parse state is lost."""
        log.error(
            "internal error while parsing a request from %s",
            self.peer_ip,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        self._protocol_error(GatewayError("internal error"))

    def _protocol_error(self, err: GatewayError) -> None:
        if self._body is not None:
            self._body.set_exception(err)
            self._body = None
        if self.transport is not None:
            self.transport.pause_reading()
        if not self._busy:
            self.send_error(err, close=True)
        else:
            # answer after the responses already in progress, then close
            self._queue.append(err)

    # --- timers -------------------------------------------------------------------------------
    def _arm(self, seconds: float, now: float = -1.0) -> None:
        if seconds <= 0:
            self.deadline = NEVER
        else:
            self.deadline = (now if now >= 0 else self.now()) + seconds

    def _disarm(self) -> None:
        self.deadline = NEVER

    def expired(self, now: float) -> None:
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
        if self._busy or self.tunnel is not None:
            return
        if self._in_headers and self.transport is not None and not self.closed:
            # slow or stalled request head (slowloris)
            self.send_error(RequestTimeoutError("request head not received in time"), close=True)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self.flush_soon_writes()
            self.closing = True
            self.transport.close()
        self._disarm()

    def abort(self) -> None:
        self.drop_soon_writes()
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
        self._disarm()


def _parse_host(raw: bytes) -> str:
    # A server sees few distinct Host values; remember the valid plain ones (bounded, so a
    # client sending random hosts only costs the regex).
    known = _HOSTS.get(raw)
    if known is not None:
        return known
    if _PLAIN_HOST.fullmatch(raw) is not None:
        return remember(_HOSTS, raw, raw.lower().partition(b":")[0].decode("ascii"), 256)
    h = raw.strip().lower()
    if not h:
        return ""
    if h.startswith(b"["):
        end = h.find(b"]")
        if end < 0:
            raise _Abort(BadRequestError("invalid Host header"))
        name, rest = h[: end + 1], h[end + 1 :]
    else:
        name, _, port = h.partition(b":")
        rest = b":" + port if _ else b""
    if rest and not (rest.startswith(b":") and rest[1:].isdigit()):
        raise _Abort(BadRequestError("invalid Host header"))
    for c in name:
        if c not in _HOST_CHARS:
            raise _Abort(BadRequestError("invalid Host header"))
    return name.decode("ascii")


#: RFC 9110 §6.5.1 fields a trailer section must not carry (framing, routing, authentication,
#: request modifiers, content handling) plus what the gateway itself asserts about the client
_FORBIDDEN_TRAILERS: Final = frozenset(
    {
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-encoding",
        b"content-length",
        b"content-range",
        b"content-type",
        b"cookie",
        b"expect",
        b"forwarded",
        b"host",
        b"if-match",
        b"if-modified-since",
        b"if-none-match",
        b"if-range",
        b"if-unmodified-since",
        b"keep-alive",
        b"max-forwards",
        b"pragma",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"range",
        b"set-cookie",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"via",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-real-ip",
    }
)

#: the common Host: a name or IPv4 address with an optional port (anything else takes the
#: careful path below)
_PLAIN_HOST: Final = re.compile(rb"[A-Za-z0-9.-]+(?::[0-9]+)?")
_HOSTS: Final[dict[bytes, str]] = {}
_HOST_CHARS: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._~[]:!$&'()*+,;=%")


class _SimpleApp(App):
    """Adapter serving ``handler(request) -> Response`` (admin API, small internal servers)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def handle(self, conn: ServerConnection, request: Request) -> bool:
        if request.expect_continue:
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            resp = await self.handler(request)
        except GatewayError as e:
            resp = Response(e.status, Headers.from_pairs(e.headers), e.body(None))
            resp.headers.set("content-type", "application/json")
        except Exception:
            log.exception("internal handler failed")
            err = GatewayError("internal error")
            resp = Response(500, Headers([(b"content-type", b"application/json")]), err.body(None))
        body_done = request.body is None or request.body.at_eof
        keep = (
            body_done
            and request.version == "1.1"
            and b"close" not in (request.headers.get_raw(b"connection") or b"").lower()
        )
        body = resp.body if isinstance(resp.body, bytes) else await resp.body.read_all()
        headers = [(k, v) for k, v in resp.headers.raw() if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        if not keep:
            headers = [(k, v) for k, v in headers if k != b"connection"]
            headers.append((b"connection", b"close"))
        conn.write(head_bytes(resp.status, resp.reason, headers))
        if request.method != "HEAD" and body:
            conn.write(body)
        return keep


async def serve_simple(
    handler: Callable[[Request], Awaitable[Response]],
    host: str,
    port: int,
    limits: ServerLimits | None = None,
    ssl: Any = None,
) -> asyncio.Server:
    """Serve ``handler`` on ``host:port`` with the same hardened HTTP/1.1 framing."""
    loop = asyncio.get_running_loop()
    app = _SimpleApp(handler)
    lim = limits or Limits(max_body_bytes=16 * 1024 * 1024)
    trusted = TrustedProxies([])
    return await loop.create_server(
        lambda: as_protocol(ServerConnection(app, lim, trusted, "https" if ssl else "http", loop)),
        host,
        port,
        ssl=ssl,
        reuse_address=True,
    )
