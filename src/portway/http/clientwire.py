"""The pieces around an upstream connection (:mod:`portway.http.client`): the response head
record, the callback interface a task-free exchange receives a response through
(:class:`ResponseSink`), the protocol object of the head-validating "lite" parser, and the
building of request lines. Re-exported by ``portway.http.client``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from portway.http.exceptions import UpstreamProtocolError
from portway.http.headers import Headers
from portway.http.rawhead import SPECIAL, Reparse, scan_head
from portway.http.wire import METHODS, append_fields

if TYPE_CHECKING:
    from portway.http.client import UpstreamConnection

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
    (the task-free exchange in ``portway.proxy.fastexchange`` subclasses it).

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
        among them, its value is ``content_length``. The list is never mutated (it may be
        the connection's remembered runs, ``RawHead.last_fields``, shared by the responses
        with that head): a sink that edits the fields works on a copy."""
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
    whole. Trailers need ``on_header``: a chunked
    response is handed to the full parser before its body starts."""

    __slots__ = ("conn",)

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn

    def on_message_begin(self) -> None:
        if self.conn.message_done:
            raise UpstreamProtocolError("upstream sent data after the end of the response")

    def on_headers_complete(self) -> None:
        """The head's bytes go to :func:`~portway.http.rawhead.scan_head`; a plain head to
        ``sink.on_head_raw``, anything else back to the field-by-field parser
        (:class:`Reparse`, ``_redo``)."""
        c = self.conn
        chunks = c._head_chunks
        buf = b"".join(chunks) if chunks is not None else c._cur
        h = c._head
        try:
            scan_head(buf, c._head_only, h)
        except Reparse:
            # the pieces stay: the field-by-field parse starts again from the first one
            # (``_reparse``; dropping them first made it start at this read: a head in
            # several reads that needs that parse was refused as invalid)
            c._redo = True
            raise
        c._head_chunks = None
        c.head_parsed(h.close_delimited)
        sink = c.sink
        assert sink is not None
        try:
            sink.on_head_raw(h.status, h.reason, h.fields, h.keep_alive, h.content_length)
        except Exception as exc:
            c._note(exc)
            raise

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn.on_message_complete()


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
