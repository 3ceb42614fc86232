"""What a client connection serves and is served through: the :class:`App` seam, the
response-writer interface (:class:`ClientConnection`) HTTP/1.1 and HTTP/2 implement, and the
callback-exchange hooks of the task-free path. Re-exported by ``portway.http.server``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from portway.http.headers import Headers
from portway.http.models import Request

if TYPE_CHECKING:
    from portway.http.forwarded import ForwardMemo
    from portway.http.server import ServerConnection


class App:
    """What a :class:`ServerConnection` serves (subclass it).

    ``handle`` must write one complete response for ``request`` through the connection
    (``write``/``drain``) and return whether the connection may be kept alive.

    A base class, not a ``Protocol``: compiled, the per-request calls through it are direct.
    """

    async def handle(self, conn: ServerConnection, request: Request) -> bool:
        raise NotImplementedError

    def try_fast(self, conn: FastConn, request: Request) -> bool:
        """Serve ``request`` without a task when possible (callbacks only); True when taken.

        ``conn``: an HTTP/1.1 :class:`ServerConnection` or an HTTP/2 stream
        (``http/ng2stream.py``). A taken request must end with exactly one
        :meth:`FastConn.fast_done` or :meth:`FastConn.fast_fallback` (which may come before
        this returns). Must never raise."""
        return False

    def fields_unread(self) -> bool:
        """A lite request head's fields may be left unread until first used
        (``Headers.unread``): the configuration rarely reads them."""
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

    @property
    def extra(self) -> dict[str, Any]: ...

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
    """Work a callback exchange handed back to the connection's worker task (or, on an
    HTTP/2 stream, to a task of the stream's own)."""

    async def run(self, conn: ClientConnection) -> bool: ...


class CallbackExchange(Protocol):
    """A callback exchange in progress on a connection (see :meth:`App.try_fast`)."""

    def client_lost(self) -> None: ...


class FastConn(Protocol):
    """What the task-free path (``proxy/fast.py``, ``proxy/fastexchange.py``) serves a
    request through: an HTTP/1.1 :class:`ServerConnection` or an HTTP/2 stream
    (``http/ng2stream.py:NgStream``). The HTTP/1.1 one takes the response as bytes
    (``write_soon``); a stream only through the response-writer interface of
    :class:`ClientConnection` (``proxy/fastsink.py``).

    - ``fast_done(keep, now)``: the exchange wrote its whole response (HTTP/1.1: the next
      queued request is served; a stream: nothing, it ends with its END_STREAM);
    - ``fast_fallback(resumed)``: a task carries the request on (:class:`Resumed`);
    - ``exchange``: the exchange in progress, told (``client_lost``) when the client goes
      away (HTTP/1.1: the connection; a stream: its reset too).
    """

    closed: bool
    exchange: CallbackExchange | None

    @property
    def transport(self) -> asyncio.Transport | None: ...

    @property
    def extra(self) -> dict[str, Any]: ...

    @property
    def alt_svc(self) -> bytes | None: ...

    @property
    def _can_write(self) -> Any: ...

    @property
    def forward_memo(self) -> ForwardMemo: ...

    def now(self) -> float: ...

    def write_soon(self, data: bytes) -> None: ...

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

    def abort(self) -> None: ...

    def fast_done(self, keep: bool, now: float = -1.0) -> None: ...

    def fast_fallback(self, resumed: Resumed) -> None: ...
