"""HTTP/2 conformance: the cases of h2spec (github.com/summerwind/h2spec, sections
"generic", "http2" and "hpack"), re-created here as raw frames, since h2spec itself is not
installed in the test environment.

Each case opens its own connection, completes the handshake (client preface + SETTINGS,
SETTINGS ACK both ways, as h2spec does), sends its frames and checks what came back with
h2spec's own rule:

* connection error: a GOAWAY with the expected code (or the connection closed without one);
* stream error: a RST_STREAM or a GOAWAY with one of the expected codes (or the connection
  closed); an error *response* (e.g. a 400) does not count;
* a normal answer: a response HEADERS frame, a PING ACK with the payload sent, ...

Outcomes are asserted on frames and error codes, never on timings. Every case runs on both
HTTP/2 server engines (tests/http/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import hpack
import pytest

from tests.helpers import run_gateway, run_upstream, simple_config

pytestmark = pytest.mark.usefixtures("h2_engine")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
# flags
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIO = 0x4, 0x8, 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0x6, 0x7, 0x9
CODES = {
    0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
    8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
}  # fmt: skip
MAX_WINDOW = 2**31 - 1
TIMEOUT = 10.0


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload
    )


def settings(*pairs: tuple[int, int], flags: int = 0, sid: int = 0) -> bytes:
    return frame(
        SETTINGS,
        flags,
        sid,
        b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs),
    )


def ping(payload: bytes = b"h2spec\x00\x00", flags: int = 0, sid: int = 0) -> bytes:
    return frame(PING, flags, sid, payload)


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, increment.to_bytes(4, "big"))


def rst(sid: int, code: int = 8) -> bytes:
    return frame(RST_STREAM, 0, sid, code.to_bytes(4, "big"))


def priority(sid: int, dep: int, weight: int = 15) -> bytes:
    return frame(PRIORITY, 0, sid, dep.to_bytes(4, "big") + bytes([weight]))


# -- HPACK, by hand: literal fields without indexing, so each block stands alone --------


def hint(value: int, prefix: int, first: int = 0) -> bytes:
    """An HPACK integer with a ``prefix``-bit prefix; ``first`` holds the leading bits."""
    top = (1 << prefix) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes([*out, value])


def hstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return hint(len(b), 7) + b


def lit(name: str, value: str) -> bytes:
    """Literal Header Field without Indexing, new name (RFC 7541 §6.2.2)."""
    return b"\x00" + hstr(name) + hstr(value)


def block(*fields: tuple[str, str]) -> bytes:
    return b"".join(lit(n, v) for n, v in fields)


BASE = ((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "localhost"))
REQ = block(*BASE)
POST = block((":method", "POST"), *BASE[1:])


def headers(sid: int, fields: bytes = REQ, flags: int = END_HEADERS | END_STREAM) -> bytes:
    return frame(HEADERS, flags, sid, fields)


def request(*fields: tuple[str, str], sid: int = 1, end: bool = True) -> bytes:
    return headers(sid, block(*fields), END_HEADERS | (END_STREAM if end else 0))


def without(name: str) -> list[tuple[str, str]]:
    return [f for f in BASE if f[0] != name]


# -- expectations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Conn:
    """Connection error: GOAWAY(code) (or closed without one); ``close``: and then closed."""

    code: int
    close: bool = False


@dataclass(frozen=True)
class Stream:
    """Stream error: RST_STREAM or GOAWAY with one of ``codes`` (or closed)."""

    codes: tuple[int, ...]


@dataclass(frozen=True)
class Answer:
    """A response HEADERS frame on stream ``sid``."""

    sid: int = 1


@dataclass(frozen=True)
class PingAck:
    """The first PING ACK carries ``payload``: the frames before were ignored."""

    payload: bytes = b"h2spec\x00\x00"


@dataclass(frozen=True)
class DataLen:
    """The first DATA frame on ``sid`` is ``length`` octets long (flow control)."""

    length: int
    sid: int = 1


Expect = Conn | Stream | Answer | PingAck | DataLen
#: bytes to send, a stream id whose response must end before going on, or a function of
#: the server's SETTINGS giving the bytes
Step = bytes | int | Callable[[dict[int, int]], bytes]


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    expect: Expect
    preface: bytes | None = None  # replaces the whole handshake (client preface)


def case(name: str, expect: Expect, *steps: Step) -> Case:
    return Case(name, steps, expect)


@dataclass
class Seen:
    events: list[str] = field(default_factory=list)
    goaway: int | None = None
    rst: int | None = None
    statuses: dict[int, str] = field(default_factory=dict)
    acks: list[bytes] = field(default_factory=list)
    data: dict[int, list[int]] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    settings: dict[int, int] = field(default_factory=dict)
    settings_acked: bool = False
    closed: bool = False


class Peer:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""
        self.seen = Seen()
        self.decoder = hpack.Decoder()
        self.block = b""

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def next(self) -> bool:
        """Read and record one frame; False once the connection is closed."""
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            try:
                chunk = await self.reader.read(65536)
            except ConnectionError:
                chunk = b""
            if not chunk:
                if not self.seen.closed:
                    self.seen.closed = True
                    self.seen.events.append("closed")
                return False
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        ftype, flags = self.buf[3], self.buf[4]
        sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload, self.buf = self.buf[9 : 9 + n], self.buf[9 + n :]
        self.record(ftype, flags, sid, payload)
        return True

    def record(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        s = self.seen
        if ftype == SETTINGS and flags & ACK:
            s.settings_acked = True
        elif ftype == SETTINGS:
            for i in range(0, len(payload) - 5, 6):
                s.settings[int.from_bytes(payload[i : i + 2], "big")] = int.from_bytes(
                    payload[i + 2 : i + 6], "big"
                )
            self.send(settings(flags=ACK))
        elif ftype == GOAWAY:
            code = int.from_bytes(payload[4:8], "big")
            s.goaway = code if s.goaway is None else s.goaway
            s.events.append(f"GOAWAY({CODES.get(code, code)})")
        elif ftype == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            s.rst = code if s.rst is None else s.rst
            s.events.append(f"RST_STREAM({sid}, {CODES.get(code, code)})")
        elif ftype == PING and flags & ACK:
            s.acks.append(payload)
            s.events.append(f"PING_ACK({payload!r})")
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                pad = payload[0] if flags & PADDED else 0
                payload = payload[(1 if flags & PADDED else 0) + (5 if flags & PRIO else 0) :]
                payload = payload[: len(payload) - pad]
            self.block += payload
            if flags & END_HEADERS:
                fields = dict(self.decoder.decode(self.block))
                self.block = b""
                if ":status" in fields and sid not in s.statuses:
                    s.statuses[sid] = fields[":status"]
                    s.events.append(f"HEADERS({sid}, :status {fields[':status']})")
        elif ftype == DATA:
            s.data.setdefault(sid, []).append(len(payload))
        if ftype in (HEADERS, DATA) and flags & END_STREAM:
            s.ended.add(sid)


def done(expect: Expect, s: Seen) -> bool:
    """Whether what was seen settles the case (or nothing more can come)."""
    if s.closed:
        return True
    if isinstance(expect, Conn):
        return s.goaway is not None and not expect.close
    if s.goaway is not None or s.rst is not None:
        return True
    if isinstance(expect, Stream):
        return any(v.startswith(("4", "5")) for v in s.statuses.values())
    if isinstance(expect, Answer):
        return expect.sid in s.statuses
    if isinstance(expect, PingAck):
        return bool(s.acks)
    return expect.sid in s.data


def verdict(expect: Expect, s: Seen) -> bool:
    """h2spec's acceptance rule for ``expect`` given what was seen."""
    if isinstance(expect, Conn):
        if s.goaway is None:
            return s.closed
        return s.goaway == expect.code and (s.closed or not expect.close)
    if isinstance(expect, Stream):
        # the first error answer counts: a RST_STREAM, a GOAWAY, an error status or the close
        for e in s.events:
            if e.startswith("HEADERS") and e.split()[-1][0] in "45":
                return False  # an error response is not a stream error
            if e.startswith(("RST_STREAM", "GOAWAY")):
                return e.split("(")[1].rstrip(")").split()[-1] in {CODES[c] for c in expect.codes}
            if e == "closed":
                return True
        return False
    if isinstance(expect, Answer):
        return expect.sid in s.statuses
    if isinstance(expect, PingAck):
        return bool(s.acks) and s.acks[0] == expect.payload
    return s.data.get(expect.sid, [None])[0] == expect.length


async def run_case(port: int, c: Case) -> Seen:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    p = Peer(r, w)
    try:
        async with asyncio.timeout(TIMEOUT):
            if c.preface is not None:
                w.write(c.preface)
            else:
                w.write(PREFACE + settings())
                while not (p.seen.settings_acked and p.seen.settings) and await p.next():
                    pass
            for step in c.steps:
                if isinstance(step, int):  # wait for the end of that stream's response
                    while step not in p.seen.ended and not p.seen.rst and await p.next():
                        pass
                else:
                    p.send(step if isinstance(step, bytes) else step(p.seen.settings))
            while not done(c.expect, p.seen) and await p.next():
                pass
    except TimeoutError:
        p.seen.events.append("timeout")
    finally:
        w.close()
    return p.seen


# -- the cases ---------------------------------------------------------------------------

HUGE = MAX_WINDOW


def _too_many_streams(server: dict[int, int]) -> bytes:
    n = server.get(0x3, 100)
    return b"".join(headers(2 * i + 1, REQ, END_HEADERS) for i in range(n + 1))


SECTIONS: dict[str, list[Case]] = {
    "generic": [
        case("GET", Answer(), headers(1)),
        case("HEAD", Answer(), request((":method", "HEAD"), *BASE[1:])),
        case(
            "POST with a body",
            Answer(),
            headers(1, POST, END_HEADERS),
            frame(DATA, END_STREAM, 1, b"test"),
        ),
        case(
            "POST with trailers",
            Answer(),
            headers(1, POST, END_HEADERS),
            frame(DATA, 0, 1, b"test"),
            headers(1, block(("x-trailer", "ok"))),
        ),
        case(
            "static table indexes",
            Answer(),
            headers(1, b"\x82\x86\x84" + lit(":authority", "localhost")),
        ),
        case(
            "literal with incremental indexing",
            Answer(),
            headers(1, b"\x82\x86\x84\x41" + hstr("localhost")),
            headers(3, b"\x82\x86\x84\xbe"),
        ),
        case(
            "literal never indexed",
            Answer(),
            headers(1, REQ + b"\x10" + hstr("x-secret") + hstr("v")),
        ),
        case(
            "Huffman strings",
            Answer(),
            headers(1, bytes(hpack.Encoder().encode(list(BASE), huffman=True))),
        ),
        case("dynamic table size update", Answer(), headers(1, b"\x20" + REQ)),
        case(
            "CONTINUATION frames",
            Answer(),
            headers(1, REQ[:10], END_STREAM),
            frame(CONTINUATION, 0, 1, REQ[10:20]),
            frame(CONTINUATION, END_HEADERS, 1, REQ[20:]),
        ),
        case("PRIORITY on an idle stream", PingAck(), priority(3, 0), ping()),
        case(
            "padded HEADERS",
            Answer(),
            headers(1, b"\x04" + REQ + b"\x00" * 4, END_HEADERS | END_STREAM | PADDED),
        ),
        case(
            "padded DATA",
            Answer(),
            headers(1, POST, END_HEADERS),
            frame(DATA, END_STREAM | PADDED, 1, b"\x02ab\x00\x00"),
        ),
        case("WINDOW_UPDATE", Answer(), window_update(0, 1), headers(1), window_update(1, 1)),
    ],
    "3.5 preface": [
        case("SETTINGS answer the preface", PingAck(), ping()),
        Case(
            "invalid connection preface",
            (),
            Conn(PROTOCOL_ERROR),
            b"INVALID CONNECTION PREFACE\r\n\r\n",
        ),
    ],
    "4 frames": [
        case("4.1/1 unknown frame type ignored", PingAck(), frame(0x16, 0, 0, b"x" * 8), ping()),
        case("4.1/2 undefined flags ignored", PingAck(), ping(flags=0x16)),
        case("4.1/3 reserved bit ignored", PingAck(), ping(sid=0x80000000)),
        case(
            "4.2/1 DATA of 2^14 octets",
            Answer(),
            headers(1, POST, END_HEADERS),
            frame(DATA, END_STREAM, 1, b"x" * 16384),
        ),
        case(
            "4.2/2 DATA above SETTINGS_MAX_FRAME_SIZE",
            Stream((FRAME_SIZE_ERROR,)),
            headers(1, POST, END_HEADERS),
            frame(DATA, END_STREAM, 1, b"x" * 16385),
        ),
        case(
            "4.2/3 HEADERS above SETTINGS_MAX_FRAME_SIZE",
            Conn(FRAME_SIZE_ERROR),
            headers(1, REQ + lit("x-big", "x" * 16384)),
        ),
        case(
            "4.3/1 invalid header block fragment",
            Conn(COMPRESSION_ERROR),
            headers(1, REQ + b"\x40"),
        ),
        case(
            "4.3/2 PRIORITY inside a header block",
            Conn(PROTOCOL_ERROR),
            headers(1, REQ, END_STREAM),
            priority(1, 0),
        ),
        case(
            "4.3/3 HEADERS to another stream inside a header block",
            Conn(PROTOCOL_ERROR),
            headers(1, REQ, END_STREAM),
            headers(3),
        ),
    ],
    "5.1 stream states": [
        case("5.1/1 idle: DATA", Conn(PROTOCOL_ERROR), frame(DATA, END_STREAM, 1, b"test")),
        case("5.1/2 idle: RST_STREAM", Conn(PROTOCOL_ERROR), rst(1)),
        case("5.1/3 idle: WINDOW_UPDATE", Conn(PROTOCOL_ERROR), window_update(1, 100)),
        case(
            "5.1/4 idle: CONTINUATION",
            Conn(PROTOCOL_ERROR),
            frame(CONTINUATION, END_HEADERS, 1, REQ),
        ),
        case(
            "5.1/5 half closed (remote): DATA",
            Stream((STREAM_CLOSED,)),
            headers(1),
            frame(DATA, END_STREAM, 1, b"test"),
        ),
        case(
            "5.1/6 half closed (remote): HEADERS", Stream((STREAM_CLOSED,)), headers(1), headers(1)
        ),
        case(
            "5.1/7 half closed (remote): CONTINUATION",
            Stream((STREAM_CLOSED, PROTOCOL_ERROR)),
            headers(1),
            frame(CONTINUATION, END_HEADERS, 1, REQ),
        ),
        case(
            "5.1/8 closed: DATA after RST_STREAM",
            Stream((STREAM_CLOSED,)),
            headers(1, POST, END_HEADERS),
            rst(1),
            frame(DATA, END_STREAM, 1, b"test"),
        ),
        case(
            "5.1/9 closed: HEADERS after RST_STREAM",
            Stream((STREAM_CLOSED,)),
            headers(1, POST, END_HEADERS),
            rst(1),
            headers(1),
        ),
        case(
            "5.1/10 closed: CONTINUATION after RST_STREAM",
            Stream((STREAM_CLOSED, PROTOCOL_ERROR)),
            headers(1, POST, END_HEADERS),
            rst(1),
            frame(CONTINUATION, END_HEADERS, 1, REQ),
        ),
        case(
            "5.1/11 closed: DATA after END_STREAM",
            Stream((STREAM_CLOSED,)),
            headers(1),
            1,
            frame(DATA, END_STREAM, 1, b"test"),
        ),
        case(
            "5.1/12 closed: HEADERS after END_STREAM",
            Stream((STREAM_CLOSED,)),
            headers(1),
            1,
            headers(1),
        ),
        case(
            "5.1/13 closed: CONTINUATION after END_STREAM",
            Stream((STREAM_CLOSED, PROTOCOL_ERROR)),
            headers(1),
            1,
            frame(CONTINUATION, END_HEADERS, 1, REQ),
        ),
        case("5.1.1/1 even stream id", Conn(PROTOCOL_ERROR), headers(2)),
        # (5.1.1/2, a HEADERS with a stream id lower than a previous one, is left out: the
        # h2 engine answers GOAWAY(PROTOCOL_ERROR), libnghttp2 ignores the header block on
        # purpose, nghttp2_session.c: it cannot tell such a stream from a closed one)
        case(
            "5.1.2/1 above SETTINGS_MAX_CONCURRENT_STREAMS",
            Stream((PROTOCOL_ERROR, REFUSED_STREAM)),
            _too_many_streams,
        ),
    ],
    "5.3-5.5": [
        case(
            "5.3.1/1 HEADERS depends on itself",
            Stream((PROTOCOL_ERROR,)),
            headers(1, (1).to_bytes(4, "big") + b"\x0f" + REQ, END_HEADERS | END_STREAM | PRIO),
        ),
        case("5.3.1/2 PRIORITY depends on itself", Stream((PROTOCOL_ERROR,)), priority(1, 1)),
        case(
            "5.4.1/1 invalid PING: GOAWAY then close",
            Conn(FRAME_SIZE_ERROR, close=True),
            ping(b"123456"),
        ),
        case(
            "5.5/1 unknown extension frame ignored", PingAck(), frame(0xFF, 0, 0, b"x" * 8), ping()
        ),
        case(
            "5.5/2 unknown extension frame inside a header block",
            Conn(PROTOCOL_ERROR),
            headers(1, REQ, END_STREAM),
            frame(0xFF, 0, 1, b"x" * 8),
        ),
    ],
    "6.1-6.4 DATA HEADERS PRIORITY RST_STREAM": [
        case("6.1/1 DATA on stream 0", Conn(PROTOCOL_ERROR), frame(DATA, END_STREAM, 0, b"test")),
        case(
            "6.1/2 DATA on a half-closed (remote) stream",
            Stream((STREAM_CLOSED,)),
            headers(1),
            frame(DATA, END_STREAM, 1, b"test"),
        ),
        case(
            "6.1/3 DATA with a pad length too large",
            Conn(PROTOCOL_ERROR),
            headers(1, POST, END_HEADERS),
            frame(DATA, END_STREAM | PADDED, 1, b"\x06test"),
        ),
        case(
            "6.2/1 HEADERS without END_HEADERS, then PRIORITY",
            Conn(PROTOCOL_ERROR),
            headers(1, REQ, END_STREAM),
            priority(1, 0),
        ),
        case("6.2/2 HEADERS on stream 0", Conn(PROTOCOL_ERROR), headers(0)),
        case(
            "6.2/3 HEADERS with a pad length too large",
            Conn(PROTOCOL_ERROR),
            headers(1, bytes([len(REQ) + 1]) + REQ, END_HEADERS | END_STREAM | PADDED),
        ),
        case(
            "6.2/4 HEADERS without END_HEADERS, then DATA",
            Conn(PROTOCOL_ERROR),
            headers(1, POST, 0),
            frame(DATA, END_STREAM, 1, b"test"),
        ),
        case("6.3/1 PRIORITY on stream 0", Conn(PROTOCOL_ERROR), priority(0, 1)),
        case(
            "6.3/2 PRIORITY of length 4",
            Stream((FRAME_SIZE_ERROR,)),
            headers(1, POST, END_HEADERS),
            frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00"),
        ),
        case("6.4/1 RST_STREAM on stream 0", Conn(PROTOCOL_ERROR), rst(0)),
        case("6.4/2 RST_STREAM on an idle stream", Conn(PROTOCOL_ERROR), rst(1)),
        case(
            "6.4/3 RST_STREAM of length 3",
            Conn(FRAME_SIZE_ERROR),
            headers(1, POST, END_HEADERS),
            frame(RST_STREAM, 0, 1, b"\x00\x00\x08"),
        ),
    ],
    "6.5 SETTINGS": [
        case(
            "6.5/1 SETTINGS ACK with a payload",
            Conn(FRAME_SIZE_ERROR),
            settings((0x2, 0), flags=ACK),
        ),
        case("6.5/2 SETTINGS on a stream", Conn(PROTOCOL_ERROR), settings((0x2, 0), sid=1)),
        case(
            "6.5/3 SETTINGS of length 3",
            Conn(FRAME_SIZE_ERROR),
            frame(SETTINGS, 0, 0, b"\x00\x02\x00"),
        ),
        case("6.5.2/1 SETTINGS_ENABLE_PUSH = 2", Conn(PROTOCOL_ERROR), settings((0x2, 2))),
        case(
            "6.5.2/2 SETTINGS_INITIAL_WINDOW_SIZE = 2^31",
            Conn(FLOW_CONTROL_ERROR),
            settings((0x4, 2**31)),
        ),
        case(
            "6.5.2/3 SETTINGS_MAX_FRAME_SIZE = 16383", Conn(PROTOCOL_ERROR), settings((0x5, 16383))
        ),
        case(
            "6.5.2/4 SETTINGS_MAX_FRAME_SIZE = 2^24", Conn(PROTOCOL_ERROR), settings((0x5, 2**24))
        ),
        case("6.5.2/5 unknown setting ignored", PingAck(), settings((0xFF, 1)), ping()),
        case(
            "6.5.3/1 several SETTINGS_INITIAL_WINDOW_SIZE values: the last one",
            DataLen(1),
            settings((0x4, 100), (0x4, 1)),
            headers(1),
        ),
    ],
    "6.7-6.10 PING GOAWAY WINDOW_UPDATE CONTINUATION": [
        case("6.7/1 PING answered with its payload", PingAck(b"abcdefgh"), ping(b"abcdefgh")),
        case(
            "6.7/2 PING ACK not answered",
            PingAck(b"12345678"),
            ping(b"abcdefgh", flags=ACK),
            ping(b"12345678"),
        ),
        case("6.7/3 PING on a stream", Conn(PROTOCOL_ERROR), ping(sid=1)),
        case("6.7/4 PING of length 6", Conn(FRAME_SIZE_ERROR), ping(b"123456")),
        case("6.8/1 GOAWAY on a stream", Conn(PROTOCOL_ERROR), frame(GOAWAY, 0, 1, b"\x00" * 8)),
        case(
            "6.9/1 WINDOW_UPDATE of 0 on the connection", Conn(PROTOCOL_ERROR), window_update(0, 0)
        ),
        case(
            "6.9/2 WINDOW_UPDATE of 0 on a stream",
            Stream((PROTOCOL_ERROR,)),
            headers(1, POST, END_HEADERS),
            window_update(1, 0),
        ),
        case(
            "6.9/3 WINDOW_UPDATE of length 3",
            Conn(FRAME_SIZE_ERROR),
            frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"),
        ),
        case(
            "6.9.1/1 SETTINGS_INITIAL_WINDOW_SIZE = 1", DataLen(1), settings((0x4, 1)), headers(1)
        ),
        case(
            "6.9.1/2 connection window above 2^31-1",
            Conn(FLOW_CONTROL_ERROR),
            window_update(0, HUGE),
            window_update(0, HUGE),
        ),
        case(
            "6.9.1/3 stream window above 2^31-1",
            Stream((FLOW_CONTROL_ERROR,)),
            headers(1, POST, END_HEADERS),
            window_update(1, HUGE),
            window_update(1, HUGE),
        ),
        case(
            "6.9.2/3 SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
            Conn(FLOW_CONTROL_ERROR),
            settings((0x4, 2**31)),
        ),
        case(
            "6.10/2 CONTINUATION then another frame",
            Conn(PROTOCOL_ERROR),
            headers(1, REQ[:10], END_STREAM),
            frame(CONTINUATION, 0, 1, REQ[10:]),
            frame(DATA, 0, 1, b"x"),
        ),
        case(
            "6.10/3 CONTINUATION on stream 0",
            Conn(PROTOCOL_ERROR),
            headers(1, REQ[:10], END_STREAM),
            frame(CONTINUATION, END_HEADERS, 0, REQ[10:]),
        ),
        case(
            "6.10/4 CONTINUATION after HEADERS with END_HEADERS",
            Conn(PROTOCOL_ERROR),
            headers(1),
            frame(CONTINUATION, END_HEADERS, 1, REQ),
        ),
        case(
            "6.10/5 CONTINUATION after CONTINUATION with END_HEADERS",
            Conn(PROTOCOL_ERROR),
            headers(1, REQ[:10], END_STREAM),
            frame(CONTINUATION, END_HEADERS, 1, REQ[10:]),
            frame(CONTINUATION, END_HEADERS, 1, REQ),
        ),
        case(
            "6.10/6 CONTINUATION after DATA",
            Conn(PROTOCOL_ERROR),
            headers(1, POST, END_HEADERS),
            frame(DATA, END_STREAM, 1, b"test"),
            frame(CONTINUATION, END_HEADERS, 1, REQ),
        ),
    ],
    "8.1 HTTP semantics": [
        case(
            "8.1/1 trailers without END_STREAM",
            Stream((PROTOCOL_ERROR,)),
            headers(1, POST, END_HEADERS),
            frame(DATA, 0, 1, b"test"),
            headers(1, block(("x-trailer", "ok")), END_HEADERS),
        ),
        case(
            "8.1.2/1 uppercase field name",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE, ("X-Test", "ok")),
        ),
        case(
            "8.1.2.1/1 unknown pseudo-header",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE, (":test", "ok")),
        ),
        case(
            "8.1.2.1/2 response pseudo-header in a request",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE, (":status", "200")),
        ),
        case(
            "8.1.2.1/3 pseudo-header in trailers",
            Stream((PROTOCOL_ERROR,)),
            headers(1, POST, END_HEADERS),
            frame(DATA, 0, 1, b"test"),
            headers(1, block((":method", "POST"))),
        ),
        case(
            "8.1.2.1/4 pseudo-header after a regular one",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE[:3], ("x-test", "ok"), BASE[3]),
        ),
        case(
            "8.1.2.2/1 connection",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE, ("connection", "keep-alive")),
        ),
        case(
            "8.1.2.2/1 keep-alive",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE, ("keep-alive", "timeout=5")),
        ),
        case(
            "8.1.2.2/1 proxy-connection",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE, ("proxy-connection", "keep-alive")),
        ),
        case(
            "8.1.2.2/1 transfer-encoding",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE, ("transfer-encoding", "chunked")),
        ),
        case(
            "8.1.2.2/1 upgrade", Stream((PROTOCOL_ERROR,)), request(*BASE, ("upgrade", "websocket"))
        ),
        case(
            "8.1.2.2/2 TE other than trailers",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE, ("te", "trailers, deflate")),
        ),
        case(
            "8.1.2.3/1 empty :path",
            Stream((PROTOCOL_ERROR,)),
            request(*BASE[:2], (":path", ""), BASE[3]),
        ),
        case("8.1.2.3/2 no :method", Stream((PROTOCOL_ERROR,)), request(*without(":method"))),
        case("8.1.2.3/3 no :scheme", Stream((PROTOCOL_ERROR,)), request(*without(":scheme"))),
        case("8.1.2.3/4 no :path", Stream((PROTOCOL_ERROR,)), request(*without(":path"))),
        case("8.1.2.3/5 :method twice", Stream((PROTOCOL_ERROR,)), request(BASE[0], *BASE)),
        case("8.1.2.3/6 :scheme twice", Stream((PROTOCOL_ERROR,)), request(BASE[1], *BASE)),
        case("8.1.2.3/7 :path twice", Stream((PROTOCOL_ERROR,)), request(BASE[2], *BASE)),
        case(
            "8.1.2.6/1 content-length above one DATA",
            Stream((PROTOCOL_ERROR,)),
            headers(1, POST + lit("content-length", "1"), END_HEADERS),
            frame(DATA, END_STREAM, 1, b"test"),
        ),
        case(
            "8.1.2.6/2 content-length above several DATA",
            Stream((PROTOCOL_ERROR,)),
            headers(1, POST + lit("content-length", "1"), END_HEADERS),
            frame(DATA, 0, 1, b"test"),
            frame(DATA, END_STREAM, 1, b"test"),
        ),
        case(
            "8.2/1 PUSH_PROMISE from a client",
            Conn(PROTOCOL_ERROR),
            headers(1, POST, END_HEADERS),
            frame(PUSH_PROMISE, END_HEADERS, 1, (2).to_bytes(4, "big") + REQ),
        ),
    ],
    "hpack": [
        case(
            "2.3.3/1 indexed field, index out of range",
            Conn(COMPRESSION_ERROR),
            headers(1, REQ + b"\xbe"),
        ),
        case(
            "2.3.3/2 literal field, name index out of range",
            Conn(COMPRESSION_ERROR),
            headers(1, REQ + b"\x7e" + hstr("x")),
        ),
        case(
            "4.2/1 dynamic table size update after a field",
            Conn(COMPRESSION_ERROR),
            headers(1, REQ + b"\x3f\xe1\x1f"),
        ),
        case(
            "5.2/1 Huffman padding longer than 7 bits",
            Conn(COMPRESSION_ERROR),
            headers(1, REQ + b"\x00" + hstr("x-test") + b"\x82\x1f\xff"),
        ),
        case(
            "5.2/2 Huffman padding not the EOS prefix",
            Conn(COMPRESSION_ERROR),
            headers(1, REQ + b"\x00" + hstr("x-test") + b"\x81\x18"),
        ),
        case(
            "5.2/3 Huffman string with EOS",
            Conn(COMPRESSION_ERROR),
            headers(1, REQ + b"\x00" + hstr("x-test") + b"\x85\x1f\xff\xff\xff\xff"),
        ),
        case(
            "6.1/1 indexed field with index 0", Conn(COMPRESSION_ERROR), headers(1, REQ + b"\x80")
        ),
        case(
            "6.3/1 table size update above SETTINGS_HEADER_TABLE_SIZE",
            Conn(COMPRESSION_ERROR),
            headers(1, b"\x3f\xe2\x1f" + REQ),
        ),
    ],
}


def describe(c: Case, s: Seen) -> str:
    return f"{c.name}: expected {c.expect}, got {', '.join(s.events) or 'nothing'}"


@pytest.mark.parametrize("section", list(SECTIONS))
async def test_h2spec_section(section: str) -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        failures = []
        for c in SECTIONS[section]:
            seen = await run_case(gw.port, c)
            if not verdict(c.expect, seen):
                failures.append(describe(c, seen))
        assert not failures, "\n".join(failures)
