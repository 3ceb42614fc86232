"""A response head that llhttp has validated, read without a Python call per field.

The upstream connection's lite parser (``http/client.py:_Lite``) has no ``on_status`` /
``on_header`` callbacks: llhttp checks the whole head (token names, no obs-fold, no bare CR
or LF, no control bytes, framing) and :func:`scan_head` then takes its bytes as they are.
Only lines whose first letter and colon position say the name may be hop-by-hop, Via or
Content-Length are looked at (:func:`special_length`); a plain head comes back as runs of
the upstream's own lines. Anything else raises :class:`Reparse`: the response is then parsed
again, field by field. See docs/architecture.md, "The lite response head".
"""

from __future__ import annotations

from typing import Final

from portway.http.headers import HOP_BY_HOP, PLAIN_CONNECTION
from portway.http.relay import body_forbidden

#: names a relayed head must not pass on as they are
SPECIAL: Final = HOP_BY_HOP | {b"via", b"content-length"}


class Reparse(Exception):
    """The head needs the field-by-field parse (1xx, 101, another version, a hop-by-hop
    field other than a plain Connection, Via, Transfer-Encoding, a repeated field)."""


class SentHead:
    """The client head the task-free exchange sent for a remembered upstream head, kept to
    send again (``proxy/fastexchange.py``, ``FastExchange.on_head_raw``): valid while the
    connection's ``RawHead.last`` is ``key`` and the exchange's ``via``, ``alt`` and
    ``flags`` (the request's facts the framing reads) are the same objects / value.
    ``fields`` and ``items`` are what the response's ``set_raw_fields`` gets (shared by the
    responses sent with this head: never mutated)."""

    __slots__ = ("alt", "fields", "flags", "head", "items", "keep", "key", "mode", "via")

    def __init__(
        self,
        key: bytes,
        via: bytes,
        alt: bytes | None,
        flags: int,
        head: bytes,
        fields: list[bytes],
        items: list[tuple[bytes, bytes]],
        mode: str,
        keep: bool,
    ) -> None:
        self.key = key
        self.via = via
        self.alt = alt
        self.flags = flags
        #: the whole head as sent: status line, fields, framing, the empty line
        self.head = head
        self.fields = fields
        self.items = items
        self.mode = mode
        self.keep = keep


class RawHead:
    """A plain response head, filled by :func:`scan_head` (one per connection, reused: no
    object per response). ``fields`` are runs of whole ``name: value CRLF`` lines in the
    upstream's order and spelling, without its Connection lines (``keep_alive`` says what
    they meant) and with its Content-Length line (``content_length`` is the value);
    ``lines`` counts the head's lines, the empty one included. ``fields`` is never mutated,
    by the scan nor by whoever gets it (``ResponseSink.on_head_raw``): it may be the list of
    the last head (``last_fields``), shared by every response with that head.

    ``last`` is the last head scanned whole (its bytes up to and including the empty line,
    b"" for none) and ``last_fields`` its runs: an upstream answering the same request on a
    keep-alive connection usually sends the same head byte for byte (Date moves once a
    second), and a head equal to the last one scans to the same values, which ``out`` still
    holds (see :func:`scan_head`); ``again`` says the last scan was such a repeat."""

    __slots__ = (
        "again",
        "close_delimited",
        "content_length",
        "fields",
        "keep_alive",
        "last",
        "last_fields",
        "last_head_only",
        "lines",
        "out_line",
        "out_reason",
        "out_status",
        "reason",
        "replay",
        "seen",
        "sent",
        "status",
        "watch_first",
        "watch_names",
    )

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.fields: list[bytes] = []
        self.content_length: bytes | None = None
        self.keep_alive = False
        #: the body ends when the connection closes (no framing, a body allowed)
        self.close_delimited = False
        self.lines = 0
        self.last = b""
        self.last_fields: list[bytes] = []
        self.last_head_only = False
        self.again = False
        #: the length of a whole response whose head is ``last`` (its Content-Length body
        #: follows), when such a response may skip llhttp (see :func:`scan_head`); 0: none
        self.replay = 0
        #: lower-case names to look for (:meth:`watch`; None: none): the names response
        #: hooks may replace, so the relay need not search the lines for them
        self.watch_names: frozenset[bytes] | None = None
        #: 256 bytes, non-zero at the first bytes (either case) of ``watch_names``
        self.watch_first = b""
        #: the last scanned head had a line of a watched name
        self.seen = False
        #: the status line the relay last sent for this connection's ``out_status`` and
        #: ``out_reason`` (compared by identity: the reason of a head not scanned again is
        #: the same object), kept by the task-free exchange
        self.out_status = 0
        self.out_reason = b""
        self.out_line = b""
        #: the client head last sent for a repeated ``last`` (see :class:`SentHead`)
        self.sent: SentHead | None = None

    def watch(self, names: frozenset[bytes] | None, first: bytes) -> None:
        """Look for ``names`` (lower-case; ``first`` from :func:`first_bytes`) in the heads
        scanned from now on (None: stop looking); :attr:`seen` tells."""
        self.watch_names = names
        self.watch_first = first
        # the remembered head's ``seen`` was for the old names
        self.last = b""
        self.replay = 0


def first_bytes(names: frozenset[bytes]) -> bytes:
    """The table :meth:`RawHead.watch` takes: byte ``c`` is 1 when some name starts with
    ``c`` (in either case)."""
    table = bytearray(256)
    for n in names:
        if n:
            table[n[0]] = 1
            table[bytes([n[0]]).upper()[0]] = 1
            table[bytes([n[0]]).lower()[0]] = 1
    return bytes(table)


def special_length(line: bytes, size: int) -> int:
    """The length of the name of the header ``line`` if that name may be in ``SPECIAL``
    (by its first letter and a colon where that name would end it), else 0. Most lines are
    passed over without finding their colon or slicing their name."""
    c = line[0] | 0x20
    if c == 99:  # connection, content-length
        if size > 10 and line[10] == 58:
            return 10
        if size > 14 and line[14] == 58:
            return 14
    elif c == 116:  # te, trailer, transfer-encoding
        if line[1] != 58 and line[2] == 58:
            return 2
        if size > 7 and line[7] == 58:
            return 7
        if size > 17 and line[17] == 58:
            return 17
    elif c == 112:  # proxy-connection, proxy-authenticate, proxy-authorization
        for n in (16, 18, 19):
            if size > n and line[n] == 58:
                return n
    elif c == 107 or c == 117:  # keep-alive, upgrade
        n = 10 if c == 107 else 7
        if size > n and line[n] == 58:
            return n
    elif c == 118 and size > 3 and line[3] == 58:  # via
        return 3
    return 0


def scan_head(buf: bytes, head_only: bool, out: RawHead) -> None:
    """Read the head at the start of ``buf`` (llhttp has accepted it whole) into ``out``,
    whose ``lines`` (the line count of the connection's last head, 0 for none) is a guess
    that saves a search; ``head_only``: the response answers a HEAD request. Raises
    :class:`Reparse`.

    A head byte for byte the same as the last one scanned into ``out`` (``out.last``: it
    ends with the empty line, so ``buf`` starting with it has exactly that head), for the
    same ``head_only``, is not scanned again: every value ``out`` holds is what the scan
    would give (``fields`` is ``last_fields`` again; nobody mutates it), and ``again`` is
    set."""
    last = out.last
    if last and out.last_head_only == head_only and buf.startswith(last):
        out.fields = out.last_fields
        out.again = True
        return
    out.again = False
    count = out.lines
    # a ``find`` per line would cost more than the callbacks saved: one split, that stops
    # after the head when it has as many lines as the last one on this connection (the
    # usual case; the rest of the bytes come back as one piece), else a search and a split
    lines: list[bytes] | None = None
    if count and len(buf) <= 8192:
        lines = buf.split(b"\r\n", count)
        if len(lines) <= count or lines[count - 1]:
            lines = None
    if lines is None:
        lines = buf[: buf.find(b"\r\n\r\n")].split(b"\r\n")
        lines.append(b"")
    first = lines[0]
    size = len(first)
    # "HTTP/1.x NNN[ reason]", as llhttp accepted it
    if size < 12 or buf[5] != 49 or buf[8] != 32 or (size > 12 and buf[12] != 32):
        raise Reparse
    minor = buf[7]
    status = (buf[9] - 48) * 100 + (buf[10] - 48) * 10 + buf[11] - 48
    if status < 200 or (minor != 49 and minor != 48):
        raise Reparse  # 1xx and 101 take the field-by-field path (rare)
    reason = first[13:] if size > 13 else b""
    watch = out.watch_names
    table = out.watch_first
    seen = False
    fields: list[bytes] = []
    cl: bytes | None = None
    cv: bytes | None = None
    pos = run = size + 2
    i = 1
    while True:
        line = lines[i]
        size = len(line)
        if not size:
            break  # the empty line that ends the head
        i += 1
        # a name a response hook may replace? (rare: the relay then drops its lines)
        if (
            watch is not None
            and not seen
            and table[line[0]]
            and line[: line.find(b":")].lower() in watch
        ):
            seen = True
        n = special_length(line, size)
        if n:
            name = line[:n]
            if name != b"Content-Length" and name != b"Connection":
                name = name.lower()
                if name not in SPECIAL:
                    pos += size + 2
                    continue
            # the value without OWS on either side (llhttp allows no other control byte)
            value = line[n + 2 :] if size > n + 2 and line[n + 1] == 32 else line[n + 1 :]
            if value and (value[0] <= 32 or value[-1] <= 32):
                value = value.strip(b" \t")
            if (name == b"Content-Length" or name == b"content-length") and cl is None:
                cl = value
                pos += size + 2
                continue  # the line stays in its run: the sink relays it
            elif (name == b"Connection" or name == b"connection") and cv is None:
                # the usual values by equality (a set lookup hashes the fresh bytes)
                if value != b"keep-alive" and value != b"close" and value not in PLAIN_CONNECTION:
                    raise Reparse
                cv = value
            else:
                raise Reparse
            if pos > run:
                fields.append(buf[run:pos])
            run = pos + size + 2
        pos += size + 2
    if pos > run:
        fields.append(buf[run:pos])
    no_body = body_forbidden(head_only, status)
    close = not no_body and cl is None
    # what llhttp's should_keep_alive says of a plain head
    if cv is None:
        keep_alive = minor == 49 and not close
    else:
        keep_alive = (cv == b"keep-alive" or cv == b"Keep-Alive") and not close
    out.status = status
    out.reason = reason
    out.fields = fields
    out.content_length = cl
    out.keep_alive = keep_alive
    out.close_delimited = close
    out.lines = i + 1
    out.seen = seen
    if pos <= _LAST_MAX:
        # ``pos`` is where the empty line starts: the head is ``buf[: pos + 2]``
        out.last = buf[: pos + 2]
        out.last_fields = fields
        out.last_head_only = head_only
        # a keep-alive response with a Content-Length body (not to HEAD, not 204/304):
        # llhttp, which accepted this head from the start of a message, would accept it
        # again from there, count the body and be back at the start of a message; a read
        # of exactly ``last`` and that body may go to the sink without it
        # (``UpstreamConnection._replay``)
        out.replay = (
            pos + 2 + int(cl)
            if keep_alive and not no_body and cl is not None and cl.isdigit() and len(cl) < 10
            else 0
        )
    else:
        out.last = b""
        out.last_fields = fields
        out.replay = 0


#: heads up to this size are remembered (``RawHead.last``): one per pooled connection
_LAST_MAX: Final = 1024
