"""Response parsing of an upstream HTTP/1.1 connection: the llhttp callbacks.

:class:`ClientParsing` is the base of :class:`~portway.http.client.UpstreamConnection` (which
holds the connection's state machine and the exchange API), as
:class:`~portway.http.serverparse.ServerParsing` is of the server side; compiled with it, so
the callbacks cost what they cost as methods of the connection. They collect the head's
fields (noting the framing and hop-by-hop ones on the way), check its framing, and hand the
head and body to the exchange: a :class:`~portway.http.clientwire.ResponseSink` by callbacks,
or ``_head_fut`` and a :class:`~portway.http.body.BodyStream`. An exception raised inside a
callback that is not about the response is a Portway bug, kept in ``_bug``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httptools

from portway.http.body import BodyStream
from portway.http.clientstate import BODY, DONE, HEAD
from portway.http.clientwire import _SPECIAL_SIZES, ResponseHead, ResponseSink
from portway.http.exceptions import UpstreamProtocolError
from portway.http.flow import WriteFlow
from portway.http.headers import PLAIN_CONNECTION, Headers
from portway.http.rawhead import SPECIAL, Reparse
from portway.http.relay import body_forbidden
from portway.http.sweeper import NEVER


class ClientParsing(WriteFlow):
    """The llhttp callbacks of :class:`~portway.http.client.UpstreamConnection` (see the
    module docstring); its attributes are set by the subclass's ``__init__``."""

    state: int
    parser: httptools.HttpResponseParser
    #: loop time of the next timeout check (see ``portway.http.sweeper``)
    deadline: float
    _head_fut: asyncio.Future[ResponseHead] | None
    _body: BodyStream | None
    sink: ResponseSink | None
    informational: Callable[[ResponseHead], None] | None
    _headers: list[tuple[bytes, bytes]]
    _reason: bytes
    _head_only: bool
    _close_delimited: bool
    _hop: bool
    _te: bytes | None
    _cl: bytes | None
    _conn_value: bytes | None
    _bug: Exception | None

    # --- what the subclass provides -------------------------------------------------------
    def _to(self, new: int) -> None:
        raise NotImplementedError

    def _cancel_timer(self) -> None:
        self.deadline = NEVER

    # --- llhttp callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        s = self.state
        if s != HEAD and s != BODY:
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
        if self.state == BODY:
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
        self._to(BODY)
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
        if self.state != BODY:
            return  # end of a 1xx message (or of a HEAD response already ended)
        self._to(DONE)
        self._cancel_timer()
        if self.sink is not None:
            try:
                self.sink.on_end()
            except Exception as exc:
                self._note(exc)
                raise
        elif self._body is not None:
            self._body.feed_eof()
