"""Writing to an HTTP/1.1 client connection: the response-writer interface
(:class:`~portway.http.serverapi.ClientConnection`: ``send_info``, ``send_head``,
``send_body``, ``send_end``, ``write``) and the gateway's own error answers (``send_error``,
and the protocol and internal errors found while parsing).

:class:`ServerWriting` sits between :class:`~portway.http.serverparse.ServerParsing` and
:class:`~portway.http.server.ServerConnection` (which holds the state machine and provides
``close``); compiled with both, so the writers cost what they cost as methods of the
connection. Every write goes after the queued ``write_soon`` bytes (``http/flow.py``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

from portway.errors import GatewayError
from portway.http.exceptions import ClientDisconnectedError
from portway.http.headers import Headers
from portway.http.models import Request
from portway.http.requestid import request_id_of
from portway.http.serverapi import Resumed
from portway.http.serverparse import ServerParsing
from portway.http.serverstate import FAST, TASK
from portway.http.wire import chunk, head_bytes, last_chunk

log: Final = logging.getLogger("portway.http")


class ServerWriting(ServerParsing):
    """The writers of :class:`~portway.http.server.ServerConnection` (see the module
    docstring); its attributes are set by the subclass's ``__init__``."""

    closed: bool
    #: ``Alt-Svc`` value every response head carries, or None
    alt_svc: bytes | None
    #: the response being written is chunked
    _chunked_out: bool
    #: requests parsed while one is served (pipelining); None until the first such
    _queue: deque[Request | GatewayError | Resumed] | None

    # --- what the subclass provides -------------------------------------------------------
    def close(self) -> None:
        raise NotImplementedError

    # --- the response-writer interface (see ClientConnection) -----------------------------
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
        s = self.state
        if s not in (TASK, FAST):
            self.send_error(err, close=True)
        else:
            # answer after the responses already in progress, then close
            q = self._queue
            if q is None:
                q = self._queue = deque()
            q.append(err)
