"""A request that arrived as a field list on a multiplexed stream (HTTP/2, HTTP/3).

HTTP/2 (``http/h2.py``) and HTTP/3 (``http/h3.py``) both receive a request as a list of
``(name, value)`` fields with pseudo-headers (RFC 9113 §8.3, RFC 9114 §4.3) and both turn it
into the :class:`Request` the HTTP/1.1 listener builds, with the same checks: the rules live
here once and each protocol calls them.

- :func:`split_fields` separates pseudo-headers, joins cookie crumbs, applies the listener's
  underscore rule (``http/owned.py``) and sizes the section;
- :func:`check_head` applies the limits (431) and the field rules of the HTTP/1.1 parser
  (``http/validate.py``): the request is forwarded on an HTTP/1.1 hop, where these bytes
  would reframe it;
- :func:`build_request` checks the target (414, 400), maps ``:authority`` to Host, reads
  Content-Length (413) and ``Expect``, resolves the client IP through the trusted proxies;
- :class:`StreamBody` is the request body: a read timeout (``limits.body_timeout`` → 408), a
  hook on the first read (``Expect: 100-continue`` is answered then) and one on every
  consumed chunk (HTTP/2 returns flow-control credit there);
- :class:`StreamWriter` is the response writer of one stream and :func:`open_request` /
  :func:`serve_stream` open and serve it: the protocol's subclass only says how a head, a
  body, an end and a reset go out (its "transport" hooks).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from mypy_extensions import mypyc_attr

from portway.errors import (
    BadRequestError,
    GatewayError,
    HeadersTooLargeError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UriTooLongError,
)
from portway.http.body import BodyStream
from portway.http.exceptions import ClientDisconnectedError
from portway.http.forwarded import TrustedProxies
from portway.http.headers import Headers
from portway.http.limits import ServerLimits
from portway.http.models import Request
from portway.http.owned import drop_underscored
from portway.http.path import normalize_path
from portway.http.relay import head_ends_stream, stream_fields
from portway.http.requestid import request_id_of
from portway.http.server import _parse_host
from portway.http.serverparse import _Abort
from portway.http.validate import TARGET_OK, check_fields, check_method, check_target


class StreamBody(BodyStream):
    """A request body on a stream: ``ack(n)`` is called as ``n`` bytes are consumed,
    ``first_read()`` once when the handler first reads, and a read waits at most
    ``timeout`` seconds for the client's next bytes (0: no limit)."""

    __slots__ = ("_ack", "_first_read", "_timeout")

    def __init__(
        self,
        ack: Callable[[int], None] | None,
        first_read: Callable[[], None] | None,
        timeout: float = 0.0,
    ) -> None:
        super().__init__()
        self._ack = ack
        self._first_read = first_read
        #: ``limits.body_timeout``: the longest wait for the client's next DATA (credit is
        #: returned as the body is read, so a reader waiting is waiting on the client)
        self._timeout = timeout

    def _pop(self) -> bytes:
        chunk = super()._pop()
        if self._ack is not None:
            self._ack(len(chunk))
        return chunk

    def _started(self) -> None:
        f = self._first_read
        if f is not None:
            self._first_read = None
            f()

    async def read(self) -> bytes:
        self._started()
        if self._chunks or self._eof or self._exc is not None or self._timeout <= 0:
            return await super().read()
        try:
            async with asyncio.timeout(self._timeout):
                return await super().read()
        except TimeoutError:
            # the client stalled its body: its fault (408), as on HTTP/1.1
            err = RequestTimeoutError("request body timed out")
            self.set_exception(err)
            raise err from None

    def read_nowait(self) -> bytes | None:
        self._started()
        return super().read_nowait()


@dataclass(slots=True)
class StreamHead:
    """A stream's request fields, split: ``pseudo`` (``:method``…), the regular ``fields``
    (cookie crumbs joined), and the section's size as HPACK/QPACK count it."""

    pseudo: dict[bytes, bytes]
    fields: list[tuple[bytes, bytes]]
    size: int

    @property
    def raw_method(self) -> bytes:
        return self.pseudo.get(b":method", b"GET")


def split_fields(
    headers: Iterable[tuple[bytes, bytes]],
    underscores: bool | None,
    owned: Callable[[], frozenset[bytes]],
) -> StreamHead:
    """Split a request's field list (never raises: the checks are :func:`check_head`'s).
    ``owned()`` gives the names the gateway sets (asked only for names containing ``_``)."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    size = 0
    for k, v in headers:
        # (exact ``bytes`` as nghttp2's and aioquic's fields are: no copy, no call)
        if type(k) is not bytes:
            k = bytes(k)
        if type(v) is not bytes:
            v = bytes(v)
        size += len(k) + len(v) + 32
        if k.startswith(b":"):
            pseudo[k] = v
        elif k == b"cookie":
            cookies.append(v)
        elif (
            95 in k
            and underscores is not None
            and drop_underscored(k.lower(), underscores, owned())
        ):
            continue  # the rule of the HTTP/1.1 listener (http/owned.py)
        else:
            fields.append((k, v))
    if cookies:
        # RFC 9113 §8.2.3, RFC 9114 §4.2.1: crumbs are joined again for an HTTP/1.1 hop
        fields.append((b"cookie", b"; ".join(cookies)))
    return StreamHead(pseudo, fields, size)


#: methods known to be tokens (``check_method`` passes them): no call for the usual ones
_TOKEN_METHODS: Final = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT"}
)


def check_head(head: StreamHead, limits: ServerLimits, fields_checked: bool = False) -> None:
    """The size limits (431) and the HTTP/1.1 parser's method and field rules.
    ``fields_checked``: the fields as received are known to pass ``check_fields(h2=True)``
    already (libnghttp2's RFC 9113 checks, a superset of those rules, accepted every one of
    them: ``tests/http/test_h2_engine.py`` compares the two byte by byte); the Cookie
    value :func:`split_fields` joined is still checked."""
    if head.size > limits.max_header_bytes:
        raise HeadersTooLargeError("request header section too large")
    if len(head.fields) > limits.max_header_count:
        raise HeadersTooLargeError("too many request header fields")
    method = head.raw_method
    if method not in _TOKEN_METHODS:
        check_method(method)
    fields = head.fields
    if not fields_checked:
        check_fields(fields, h2=True)
    elif fields and fields[-1][0] == b"cookie":
        # the crumbs, joined here, make a new value (an empty last crumb ends it in a space)
        check_fields(fields[-1:], h2=True)


def build_request(
    head: StreamHead,
    limits: ServerLimits,
    trusted: TrustedProxies | None,
    *,
    version: str,
    scheme: str,
    peer: tuple[str, int],
    server_port: int,
    ended: bool,
    make_body: Callable[[bool], StreamBody],
) -> Request:
    """The :class:`Request` of a checked ``head``; ``make_body(expect_continue)`` gives the
    body unless the stream already ended. Raises :class:`GatewayError` (the client's fault)."""
    method = head.raw_method.decode("latin-1")
    if method == "CONNECT":
        raise GatewayError(f"CONNECT over HTTP/{version}", status=501, code="not_implemented")
    pseudo = head.pseudo
    target = pseudo.get(b":path", b"")
    if len(target) > limits.max_uri_bytes:
        raise UriTooLongError("request target too long")
    if not target.startswith(b"/"):
        raise BadRequestError("invalid request target")
    if target.translate(None, TARGET_OK):
        check_target(target)  # (raises, naming the byte)
    if 35 in target:  # b"#" (an int needle is a plain byte search)
        raise BadRequestError("fragment in request target")
    raw_path, _, query = target.partition(b"?")
    # (the fields' own list: ``split_fields`` made it for this request alone)
    headers = Headers.adopt(head.fields)
    hosts = 0
    for k, _v in head.fields:
        if k == b"host":
            hosts += 1
    authority = pseudo.get(b":authority")
    if authority is not None:
        # RFC 9113 §8.3.1 / RFC 9114 §4.3.1: :authority takes precedence over Host
        if hosts:
            headers.remove(b"host")
        headers.add_raw(b"host", authority)
        hosts = 1
    if hosts > 1:
        raise BadRequestError("multiple Host header fields")
    host_raw = headers.get_raw(b"host")
    if host_raw is None:
        raise BadRequestError("missing :authority")
    host = _parse_host(host_raw)
    path = normalize_path(raw_path, allow_encoded_slashes=True)
    cl: int | None = None
    cl_raw = headers.get_raw(b"content-length")
    if cl_raw is not None:
        if not cl_raw.isdigit():
            raise BadRequestError("invalid Content-Length")
        cl = int(cl_raw)
        limit = limits.max_body_bytes
        if limit is not None and cl > limit:
            raise PayloadTooLargeError("request body too large")
    expect = headers.get_raw(b"expect")
    expect_continue = False
    if expect is not None:
        expect_continue = expect.lower() == b"100-continue"
        headers.remove(b"expect")
    body = None if ended else make_body(expect_continue)
    peer_ip, peer_port = peer
    client_ip, is_trusted = trusted.client_ip(peer_ip, headers) if trusted else (peer_ip, False)
    return Request(
        method=method,
        path=path,
        query=query,
        headers=headers,
        version=version,
        host=host,
        client_ip=client_ip,
        client_port=peer_port,
        scheme=scheme,
        raw_target=target,
        body=body,
        content_length=cl,
        peer_ip=peer_ip,
        server_port=server_port,
        trusted_peer=is_trusted,
        expect_continue=False,
        upgrade=False,
    )


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
    :meth:`send_reset`, and for back-pressure :meth:`backlogged`, :meth:`conn_paused`,
    :meth:`conn_drain`; :func:`serve_stream` calls :meth:`abandon_body` and
    :meth:`release`.
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
        out = [(b":status", b"%d" % status), *stream_fields(fields)]
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
        return sum(len(k) + len(v) + cost for k, v in out)

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
            self._waiter = self.loop.create_future()
            await self._waiter
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
    ack: Callable[[int], None] | None,
    log: logging.Logger,
) -> Request | None:
    """The :class:`Request` of stream ``w`` (the rules of the HTTP/1.1 listener), or None
    when they refuse it (``w.refuse`` has answered). The body (unless the stream ``ended``)
    becomes ``w.body``: ``ack(n)`` as it is consumed, ``100 Continue`` through
    ``w.send_interim`` on the first read when the client expects it."""

    def make_body(expect_continue: bool) -> StreamBody:
        def first_read() -> None:
            if expect_continue and not w.head_sent and not w.closed:
                w.send_interim([(b":status", b"100")])

        body = StreamBody(ack, first_read, limits.body_timeout)
        w.body = body
        return body

    version = w.rules.version
    try:
        check_head(head, limits)
        return build_request(
            head,
            limits,
            trusted,
            version=version,
            scheme=scheme,
            peer=peer,
            server_port=server_port,
            ended=ended,
            make_body=make_body,
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
    app: Any, w: StreamWriter, req: Request, log: logging.Logger, *, wait_out: bool = True
) -> None:
    """Serve ``req`` through ``app`` on stream ``w`` (the task of one stream). ``app`` is
    ``Any``: compiled, a call typed ``App.handle(ServerConnection, ...)`` would check that
    ``w`` is one (it is a ClientConnection, as the handler takes). With ``wait_out`` the
    task stays until a body still queued in ``w.out`` is sent."""
    try:
        await app.handle(w, req)
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


__all__ = [
    "StreamBody",
    "StreamHead",
    "StreamRules",
    "StreamWriter",
    "build_request",
    "check_head",
    "open_request",
    "serve_stream",
    "split_fields",
]
