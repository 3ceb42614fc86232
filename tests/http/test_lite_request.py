"""The lite request parser (``http/serverlite.py``) against the field-by-field one.

The same bytes go to two connections: one as the gateway runs (a whole head at a message
boundary is read by the loop's lite parser), one whose lite parser is off (every byte takes
``on_url``/``on_header``, as before the lite parser existed). What each serves — every
request's method, target, version, field list, Host, framing and keep-alive facts — and
what each writes and whether it closes must be the same for every input: valid heads,
mutated ones (hypothesis: the parser fuzz test's tokens), limit edges and a second read on
the same connection (the two parsers share a connection's messages).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portway.http import server as server_module
from portway.http.forwarded import TrustedProxies
from portway.http.headers import Headers
from portway.http.limits import Limits
from portway.http.models import Request, Response
from portway.http.server import App, ServerConnection
from portway.http.serverlite import ParserHooks, hooks_for
from portway.http.serversimple import _SimpleApp
from tests.http.test_parser_fuzz import TOKENS

# Two ways to serve what was parsed: ``fast`` (the recorder below, task-free, as the proxy
# serves bodiless requests) subclasses ``App``, a compiled seam that interpreted classes cannot
# extend, so it exists only on the pure sources (`.ci/run` runs this file there too); ``task``
# (the compiled ``serve_simple`` adapter with a recording handler) runs on both builds, so
# the compiled lite parser is compared with the compiled field-by-field one byte for byte
COMPILED = str(getattr(server_module, "__file__", "")).endswith(".so")
KINDS = ["task"] if COMPILED else ["task", "fast"]

BASE = (
    b"GET /api/items?id=7 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"
)
TEMPLATES = [
    BASE,
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nX_Under: 1\r\nX-E:\r\n\r\n",
    b"GET http://h.test:81/abs?q HTTP/1.1\r\nHost: other\r\nExpect: 100-continue\r\n\r\n",
    b"DELETE /d HTTP/1.1\r\nHost: a\r\nHost: b\r\nCookie: a=b\r\n\r\n",
    b"GET /x HTTP/1.1\r\nhOsT:  a \t\r\nConnection: Keep-Alive\r\nAccept:\t*/*  \r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /%2e%2e/x/./y//z#f HTTP/1.1\r\nHost: a\r\n\r\n",
    # the target's "?" and "#" (the lite scan notes where they are)
    b"GET /p?a=1?b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p? HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /p?a#b?c HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://h/x?q#f HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    # llhttp's other protocols (the lite parser hands them over; the full parse refuses them)
    b"GET /r RTSP/1.1\r\nHost: a\r\n\r\n",
    b"SOURCE /r ICE/1.0\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n",
]


def _facts(r: Request) -> tuple[Any, ...]:
    return (
        r.method,
        r.path,
        r.query,
        r.raw_target,
        r.version,
        r.host,
        list(r.headers.raw()),
        r.keep_alive,
        r.expect_continue,
        r.upgrade,
        r.content_length,
        r.body is not None,
    )


class _Recorder(App):
    """Serves every bodiless request at once (task-free, as the proxy would) and records
    what the server built; anything with a body is answered by the task."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def owned_headers(self) -> frozenset[bytes]:
        return frozenset({b"x-request-id"})

    def fields_unread(self) -> bool:
        # (the lite heads' fields left unread: built when ``_note`` reads them)
        return True

    def _note(self, r: Request) -> None:
        self.seen.append(_facts(r))

    def try_fast(self, conn: Any, request: Request) -> bool:
        self._note(request)
        conn.write_soon(b"HTTP/1.1 204 No Content\r\n\r\n")
        conn.fast_done(request.keep_alive)
        return True

    async def handle(self, conn: Any, request: Request) -> bool:
        self._note(request)
        conn.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        return request.keep_alive


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 4000), "sockname": ("127.0.0.1", 80)}.get(name)

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


_RID = re.compile(rb'(x-request-id: |"request_id": ?")[^\r"]*')


def _recording_app(kind: str) -> tuple[App, list[tuple[Any, ...]]]:
    """An app that records what the server built for each request, and its record."""
    if kind == "fast":
        rec = _Recorder()
        return rec, rec.seen
    seen: list[tuple[Any, ...]] = []

    async def handler(request: Request) -> Response:
        seen.append(_facts(request))
        if request.body is not None:
            await request.body.read_all()
        return Response(204, Headers([]))

    return _SimpleApp(handler), seen


def _serve(reads: list[bytes], lite: bool, kind: str, **limits: Any) -> tuple[Any, ...]:
    """What a connection does with ``reads``: (requests served, bytes written, closed)."""

    async def go() -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        app, seen = _recording_app(kind)
        conn = ServerConnection(app, Limits(**limits), TrustedProxies([]), "http", loop)
        conn.underscores = True
        if not lite:
            # a private hooks object without a lite parser: every byte is parsed field by
            # field, by a parser whose callbacks go through it
            hooks = ParserHooks(loop)
            hooks.lite = None
            conn._hooks = hooks
            conn.parser = httptools.HttpRequestParser(hooks.protocol)
        t = _Transport()
        conn.connection_made(t)
        for data in reads:
            if t.closed:
                break
            conn.data_received(data)
            conn.flush_soon_writes()
            for _ in range(20):  # the task's turn (requests with a body, errors, kind task)
                await asyncio.sleep(0)
        out = _RID.sub(rb"\1ID", b"".join(t.out))
        # the loop's lite parser is shared: it must be left between messages
        assert hooks_for(loop).lite is not None
        return seen, out, t.closed

    return asyncio.run(go())


def _same(reads: list[bytes], **limits: Any) -> tuple[Any, ...]:
    lite: tuple[Any, ...] = ()
    for kind in KINDS:
        full = _serve(reads, False, kind, **limits)
        lite = _serve(reads, True, kind, **limits)
        assert lite == full, (kind, reads)
    return lite


@pytest.mark.parametrize("data", TEMPLATES)
def test_templates_serve_the_same(data: bytes) -> None:
    seen, out, _closed = _same([data])
    assert seen or out.startswith(b"HTTP/1.1 4"), out


@pytest.mark.parametrize("kind", KINDS)
def test_the_usual_head_takes_the_lite_parser(kind: str) -> None:
    """No field callback runs for a plain head: the connection's own parser is never fed."""

    class Refuse:
        def __getattr__(self, name: str) -> Any:
            def cb(*args: object) -> None:
                raise AssertionError(f"{name} called")

            return cb

    async def go() -> list[tuple[bytes, bytes]]:
        loop = asyncio.get_running_loop()
        app, seen = _recording_app(kind)
        conn = ServerConnection(app, Limits(), TrustedProxies([]), "http", loop)
        conn.parser = httptools.HttpRequestParser(Refuse())
        conn.connection_made(_Transport())
        for _ in range(3):
            conn.data_received(BASE)
            for _ in range(20):  # the task's turn (kind task)
                await asyncio.sleep(0)
        assert len(seen) == 3
        return seen[-1][6]  # type: ignore[no-any-return]

    assert asyncio.run(go()) == [
        (b"host", b"api.example.com"),
        (b"user-agent", b"t"),
        (b"accept", b"*/*"),
    ]


@pytest.mark.parametrize(
    "reads",
    [
        # the connection's parser closes after these: the next head must be refused by it
        [b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", BASE],
        [b"GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n", BASE],
        [b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", BASE],
        [b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", BASE],
        # a head split across reads, then a whole one; a body, then a whole head
        [BASE[:20], BASE[20:], BASE],
        [b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", BASE, BASE],
        [b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", b"abc", BASE],
        # pipelined heads in one read, then one alone
        [BASE + BASE, BASE],
        [b"\r\n", BASE],
        [b"\r\n" + BASE, BASE],
        # errors on either parser, then more bytes
        [b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", BASE],
        [b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BASE],
        [b"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", BASE],
        [b"GET / HTTP/1.1\r\nHost: a\nX: v\r\n\r\n", BASE],
        [b"GET / HTTP/1.1\r\nHost: a\r\nX: v\rw\r\n\r\n", BASE],
        [b"GET / HTTP/1.1\r\nHost: a\r\n obs\r\n\r\n", BASE],
        [b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", BASE],
        [b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", BASE],
        [b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", BASE],
        [b"GET / HTTP/1.1\r\nContent\rLength: 5\r\n\r\n", BASE],
    ],
)
def test_sequences_serve_the_same(reads: list[bytes]) -> None:
    _same(reads)


@pytest.mark.parametrize(
    "limits",
    [
        # at, under and over the exact limit, and around the lite parser's own bound
        {"max_uri_bytes": 16},
        {"max_uri_bytes": 15},
        {"max_uri_bytes": 14},
        {"max_header_count": 4},
        {"max_header_count": 3},
        {"max_header_count": 2},
        {"max_header_bytes": 52},
        {"max_header_bytes": 51},
        {"max_header_bytes": 50},
        {"max_header_bytes": len(BASE) + 7},
        {"max_header_bytes": len(BASE) + 6},
    ],
)
def test_limits_answer_the_same(limits: dict[str, int]) -> None:
    _same([BASE, BASE], **limits)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            data[pos : pos + draw(st.integers(1, 4))] = b""
        elif pos < len(data):
            data[pos : pos + 1] = draw(st.sampled_from(TOKENS))
    # a whole head at the end of the read: what the lite parser is tried on
    if not data.endswith(b"\r\n\r\n"):
        data += b"\r\n\r\n"
    return bytes(data)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(first=_mutated(), second=st.one_of(st.just(BASE), _mutated()))
def test_mutated_heads_serve_the_same(first: bytes, second: bytes) -> None:
    _same([first, second])
