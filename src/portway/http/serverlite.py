"""The llhttp callbacks of a loop's client connections, and the lite request head.

:class:`ParserHooks` is the object every client parser of a loop calls back (one per loop,
see its docstring). It also owns the loop's **lite parser**: one more llhttp request parser,
shared by the loop's connections, that has no ``on_message_begin``/``on_url``/``on_header``
callbacks. llhttp then validates a whole request head (method, target characters, version,
token names, no obs-fold, no bare CR or LF, no control bytes, Content-Length and
Transfer-Encoding rules) without a call into Python per field, and :func:`scan_head` reads
the validated bytes into exactly the per-message state the field-by-field callbacks
(``ServerParsing.on_url``/``on_header``) would have built (issue 26, session 10: ~8
crossings into compiled code per request, before the upstream write).

It takes only the common request, and only when it is sure: a read that begins at a message
boundary and holds one whole head and nothing else, HTTP/1.1, no Content-Length,
Transfer-Encoding, Upgrade or Proxy-Connection field, Connection only as ``keep-alive``, not
CONNECT, within the connection's limits by a bound that needs no per-field count. So a lite
message has no body, ends with its head and leaves llhttp between messages in a keep-alive
state: the shared parser holds nothing of one connection when the next one uses it. Anything
else — or any error llhttp finds — is parsed again from the same bytes by the connection's
own (field-by-field) parser, which therefore gives every answer it gives today: the framing
and smuggling checks, the limits (414/431), the error texts. The connection's own parser is
only ever handed bytes at a message boundary, and not at all after a message it parsed left
llhttp closing the connection (``ServerParsing._lite_ok``), so both parsers see the
connection's messages as one parser would.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Final

import httptools
from mypy_extensions import i64

from portway.http.forwarding import LITE_LOOK
from portway.http.loops import PerLoop
from portway.http.owned import drop_underscored
from portway.http.serverparse import ServerParsing


class _Reparse(Exception):
    """The lite parser met a head it does not take (see the module docstring)."""


class ParserHooks:
    """The object llhttp's callbacks are bound to, one per event loop, shared by the loop's
    client connections: it passes each callback on to ``conn``, the connection whose bytes
    are being parsed (``ServerConnection.data_received`` sets it around ``feed_data``).

    Why: httptools looks every callback up on its protocol object once per parser, and a
    method looked up is a new bound method: six of them (~430 bytes) per connection for
    life. ``protocol`` holds the six bound once, as plain attributes, so every parser of the
    loop shares them (issue 26: an idle keep-alive connection ≤ 3 KB). The price is one
    direct call per callback (compiled). A head parsed while ``conn`` is None is no
    message's (``ServerParsing._skip_upgrade``): its callbacks are dropped.

    ``lite`` is the loop's lite parser (module docstring), None while one of the loop's
    connections is feeding it (a nested parse then takes its own parser)."""

    def __init__(self, loop: object) -> None:
        #: the connection being parsed (None between reads)
        self.conn: ServerParsing | None = None
        #: what the parsers are made with: the callbacks, bound once
        self.protocol: object = SimpleNamespace(
            on_message_begin=self.on_message_begin,
            on_url=self.on_url,
            on_header=self.on_header,
            on_headers_complete=self.on_headers_complete,
            on_body=self.on_body,
            on_message_complete=self.on_message_complete,
        )
        #: non-empty while a lite message has not completed: its ``on_message_complete`` is
        #: this list's ``clear`` (a builtin method: far cheaper to call than a compiled one)
        self.lite_open: list[None] = []
        self.lite_protocol: object = SimpleNamespace(
            on_headers_complete=self.on_lite_head,
            on_message_complete=self.lite_open.clear,
        )
        self.lite: httptools.HttpRequestParser | None = httptools.HttpRequestParser(
            self.lite_protocol
        )
        #: the connection feeding the lite parser
        self.lite_conn: ServerParsing | None = None
        #: the lite head was taken (its request is being served): errors from here on are
        #: that request's, not a reason to parse it again
        self.committed = False

    def on_message_begin(self) -> None:
        c = self.conn
        if c is not None:
            c.on_message_begin()

    def on_url(self, url: bytes) -> None:
        c = self.conn
        if c is not None:
            c.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        c = self.conn
        if c is not None:
            c.on_header(name, value)

    def on_headers_complete(self) -> None:
        c = self.conn
        if c is not None:
            c.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        c = self.conn
        assert c is not None
        c.on_body(body)

    def on_message_complete(self) -> None:
        c = self.conn
        assert c is not None
        c.on_message_complete()

    def on_lite_head(self) -> None:
        """llhttp accepted a whole head on the lite parser: read it (or give it up)."""
        c = self.lite_conn
        assert c is not None
        method = scan_head(c, c._chunk)
        if method is None:
            raise _Reparse
        self.committed = True
        c.head_done(method, "1.1")

    def feed_lite(self, c: ServerParsing, data: bytes) -> bool:
        """Parse ``data`` (one whole head at a message boundary of ``c``, see the module
        docstring) on the lite parser. False: nothing was done, parse it field by field;
        True: it was parsed and its request enqueued, or a parse error was answered."""
        lite = self.lite
        if lite is None:
            return False  # (nested: an outer parse of another connection is using it)
        self.lite = None
        self.lite_conn = c
        self.committed = False
        c._chunk = data
        opened = self.lite_open
        opened.append(None)
        try:
            lite.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            # llhttp stops for good after an error: the next lite parse gets a fresh parser
            self.lite = httptools.HttpRequestParser(self.lite_protocol)
            opened.clear()
            if not self.committed:
                return False
            c.parse_failed(e)
            return True
        finally:
            self.lite_conn = None
        self.lite = lite
        if opened and not self.committed:
            # no head at all: only empty lines, which llhttp skips before a request line
            # (e.g. b"\r\n\r\n"); the connection's own parser reads them as it always did
            opened.clear()
            self.lite = httptools.HttpRequestParser(self.lite_protocol)
            return False
        if opened:
            # not reachable (a lite head has no body): the parser would be left inside
            # this connection's message, so it is dropped, and so is the connection
            opened.clear()
            self.lite = httptools.HttpRequestParser(self.lite_protocol)
            bug = RuntimeError("lite request parser left mid-message")
            c._bug = bug
            c.parse_failed(bug)
        c._boundary = True  # (what ``on_message_complete`` says on the full parser)
        return True


def scan_head(c: ServerParsing, data: bytes) -> bytes | None:
    """Read the head llhttp accepted (``data``, ending with its empty line) into ``c``'s
    per-message state, as ``on_message_begin``/``on_url``/``on_header`` would; returns
    the raw method, or None when the head is not one the lite parser takes (nothing in
    ``c`` is then relied on: the full parse starts with ``on_message_begin``).

    Positions are found byte by byte (compiled, a few instructions a byte): a ``split``
    or a ``find`` per line costs more in objects and argument parsing than the bytes of
    a usual head. They are native ``i64`` (a tagged ``int`` index costs twice as much per
    byte: a tag test, a conversion, a call per ``+= 1``). llhttp accepted the head, so a
    line ends only at CR LF (no bare CR or LF: tests/http/test_lite_request.py), a field
    line is a token, a colon and a value."""
    end: i64 = len(data) - 2  # where the empty line starts
    if data[0] < 65:  # (empty lines before the request line, which llhttp skips)
        return None
    sp: i64 = 0
    while data[sp] != 32:  # the method ends at the first space (llhttp: a known method)
        sp += 1
    i: i64 = sp + 1
    q: i64 = -1  # where the target's "?" is (``_build_request`` then needs no search)
    b = data[i]
    while b != 13:
        if b == 63 and q < 0:  # b"?"
            q = i
        elif b == 35:  # b"#": refused there, by the usual search
            q = -3
            break
        i += 1
        b = data[i]
    while data[i] != 13:
        i += 1
    # "method SP target SP HTTP/1.1" (llhttp checked the version's form; it also takes
    # "RTSP/1.1" for some methods, which the "H" rules out: the full parse refuses it)
    if (
        i < sp + 11
        or data[i - 9] != 32
        or data[i - 8] != 72
        or data[i - 3] != 49
        or data[i - 1] != 49
    ):
        return None
    url = data[sp + 1 : i - 9]
    # llhttp lets more than one space through on either side of the target
    if url[0] == 32 or url[-1] == 32 or len(url) > c._max_uri:
        return None
    if sp == 3 and data[0] == 71 and data[1] == 69:  # "GET" (no new bytes)
        method = b"GET"
    else:
        method = data[:sp]
        if method == b"CONNECT":
            return None
    headers: list[tuple[bytes, bytes]] = []
    host: bytes | None = None
    hosts = 0
    expect: bytes | None = None
    conn: bytes | None = None
    # for the upstream head (``forwarding.forward_lite_lines``): where the field lines after
    # a first Host line start (-1: Host is not first, or a field was dropped for "_"), and
    # whether any other field is one the forwarding rules look at / every line is written
    # ``name: value CRLF`` with one space and no OWS after the value (its length is then
    # the field's name and value lengths + 4)
    after_host: i64 = -1
    cut = False
    look: i64 = 0
    canon: i64 = 2
    pos: i64 = i + 2
    count: i64 = 0  # the fields in ``headers`` (or that would be, when left unread)
    unread = True
    if pos < end:
        # a name with "_" may be dropped (``on_header``); most heads have no "_" anywhere
        underscores = c.underscores if 95 in data else None
        # without that rule, and when the configuration rarely reads them, the field list
        # is left to be built when first read (``Headers.unread``: a read costs more than
        # the scan saves): only names that may matter here are made
        unread = underscores is None and c._fields_unread()
        low = data.lower() if not unread else b""  # names (one call, not one per field)
        limit: i64 = c._max_header_bytes
        most: i64 = c._max_header_count
        size: i64 = 0
        while pos < end:
            if count >= most:
                return None  # (fields dropped for "_" count too: the callbacks decide)
            start = pos
            k = pos
            b = data[k]
            while b != 58:  # b":"
                if b == 13:
                    return None  # an empty line before the last: a second message
                k += 1
                b = data[k]
            v = k + 1
            while data[v] == 32 or data[v] == 9:  # OWS (llhttp drops it too)
                v += 1
            if v != k + 2 or data[k + 1] != 32:
                canon = 0
            e = v
            while data[e] != 13:
                e += 1
            # what ``on_header`` counts: the name and llhttp's value (OWS after it kept)
            size += k - start + e - v + 4
            if size > limit:
                return None
            pos = e + 2
            while e > v and (data[e - 1] == 32 or data[e - 1] == 9):
                e -= 1
                canon = 0
            if unread:
                count += 1
                first: i64 = data[start] | 32
                n = k - start
                if (
                    n == 4  # "host", any case, without a name object
                    and first == 104
                    and data[start + 1] | 32 == 111
                    and data[start + 2] | 32 == 115
                    and data[start + 3] | 32 == 116
                ):
                    hosts += 1
                    host = data[v:e]
                    if count == 1:
                        after_host = pos
                    continue
                if n >= 32 or not _NOTED[first << 5 | n]:
                    continue  # no name this scan or the forwarding rules look at
                if not low:
                    low = data.lower()
                name = low[start:k]
                value = data[v:e]
            else:
                name = low[start:k]
                value = data[v:e]
                if (
                    underscores is not None
                    and 95 in name
                    and drop_underscored(name, underscores, c._owned_headers())
                ):
                    cut = True  # (its line is not in ``headers``: see ``after_host``)
                    continue
                headers.append((name, value))
                count += 1
                first = name[0]
                n = k - start
                if n != 4 and (n >= 32 or not _NOTED[first << 5 | n]):
                    continue  # (as above; "host" and other 4-byte names go on)
            if first == 104:  # h
                if name == b"host":
                    hosts += 1
                    host = value
                    if count == 1:
                        after_host = pos
                elif name in LITE_LOOK:
                    look = 1
                continue
            if _LOOK_FIRST[first] and name in LITE_LOOK:
                look = 1
            if first == 99:  # c
                if name == b"content-length":
                    return None
                if name == b"connection":
                    # llhttp's keep-alive state must be the one the lite parser keeps
                    if conn is not None or (
                        value != b"keep-alive" and value.lower() != b"keep-alive"
                    ):
                        return None
                    conn = value
            elif first == 116:  # t
                if name == b"transfer-encoding":
                    return None
            elif first == 117:  # u
                if name == b"upgrade":
                    return None
            elif first == 112:  # p
                if name == b"proxy-connection":
                    return None  # llhttp reads it as Connection
            elif first == 101 and name == b"expect" and expect is None:
                expect = value
    c._url = url
    c._headers = headers
    # -1: the fields are left unread (``_build_request`` makes ``Headers.unread``)
    c._header_bytes = -1 if unread and count else 0
    c._in_headers = True
    c._host = host
    c._hosts = hosts
    c._te = c._cl = c._upgrade = None
    c._expect = expect
    c._conn = conn
    c._pconn = False
    c._boundary = False
    c._line = b""
    c._qmark = q - sp - 1 if q >= 0 else (-1 if q == -1 else -2)
    c._lite_at = after_host << 2 | look | canon if after_host > 0 and not cut else -1
    return method


#: the first bytes of the names in ``LITE_LOOK`` but "h" (a byte table: no hash of a name)
_LOOK_FIRST: Final = bytes(1 if chr(b) in "ckptexfv" else 0 for b in range(256))


def _noted_table() -> bytes:
    """:data:`_NOTED`, built once from ``LITE_LOOK`` (lower-case names)."""
    t = bytearray(256 << 5)
    for name in LITE_LOOK:
        assert 0 < len(name) < 32  # (the index has 5 bits for the length)
        t[name[0] << 5 | len(name)] = 1
    return bytes(t)


#: (first byte | 32) << 5 | length of every name but Host this scan or the forwarding
#: rules look at (all in ``LITE_LOOK``, all shorter than 32): a name not in this table is
#: passed over without a lower-cased copy of the head (User-Agent, Accept, Cookie, ...)
_NOTED: Final = _noted_table()


#: the parser hooks of a loop
hooks_for: PerLoop[ParserHooks] = PerLoop(ParserHooks)
