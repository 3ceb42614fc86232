"""Hypothesis fuzzing of the request parser glue over real sockets.

Random bytes and mutated valid requests (bytes flipped, inserted or deleted in the request
line, headers, chunk sizes and bodies) go to a gateway in front of a byte-recording upstream.
For every input:

- nothing is logged at ERROR level (no exception escaped a callback or task);
- the client gets a sequence of complete, well-formed HTTP/1.1 responses (llhttp parses them),
  then possibly a close — never a torn or garbled response;
- the upstream only ever receives valid HTTP/1.1, and each message it completed corresponds to
  exactly one 200 response, in order: no request is forwarded that the client was not
  answered for, so no desync is possible.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.helpers import run_gateway
from tests.http.adv_helpers import ParsedResponse, cfg_for, exchange, parse_responses, raw_upstream

TEMPLATES = [
    b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    b"GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET http://h.test:81/abs?q HTTP/1.1\r\nHost: other\r\n\r\n",
    b"PUT /v HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /%2e%2e/x/./y//z HTTP/1.1\r\nHost: a\r\nCookie: a=b; c=d\r\n\r\n",
    b"OPTIONS /o HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
]

TOKENS = [
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\x0b",
    b"\x7f",
    b"\x80",
    b"\xff",
    b":",
    b",",
    b";",
    b"%",
    b"/",
    b".",
    b"..",
    b"0",
    b"9",
    b"f",
    b"-",
    b"+",
    b"0x",
    b"HTTP/1.1",
    b"\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Host: b\r\n",
    b"Connection: upgrade\r\nUpgrade: x\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffffff\r\n",
    b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            data[pos : pos + draw(st.integers(1, 8))] = b""
        elif pos < len(data):
            data[pos : pos + 1] = draw(st.sampled_from(TOKENS))
    return bytes(data)


RANDOM = st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=300).map(lambda b: b"GET / HTTP/1.1\r\n" + b),
    st.binary(max_size=300).map(lambda b: b"POST / HTTP/1.1\r\nHost: a\r\n" + b),
    st.binary(max_size=200).map(
        lambda b: b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b
    ),
)


def _cfg(url: str) -> dict[str, Any]:
    # connect gets room: a 500 ms connect timeout to a healthy loopback upstream fired once
    # on a machine loaded to 4x its cores (a 502 the test then blamed on the parser)
    cfg = cfg_for(url, timeouts={"read": "500ms", "total": "3s", "connect": "2s"})
    cfg["server"] = {"limits": {"header_timeout": "500ms", "max_body_bytes": 4096}}
    return cfg


async def _check(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    # a HEAD response carries framing headers without a body: it cannot be parsed blindly
    assume(b"HEAD" not in data)
    # the start of the HTTP/2 preface is answered in HTTP/2 (a GOAWAY: issue 22), not HTTP/1.1
    assume(not data.startswith(b"PRI "))
    caplog.clear()
    async with raw_upstream() as up, run_gateway(_cfg(up.url)) as gw:
        out, _closed = await exchange(gw.port, data, timeout=4.5, half_close=True)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    resps: list[ParsedResponse] = parse_responses(out)
    for r in resps:
        assert r.complete, out
        assert 100 <= r.status < 600
        if r.status >= 200 and r.status not in (204, 304):
            assert r.header(b"content-length") is not None or r.chunked, out
    finals = [r for r in resps if r.status >= 200]
    # the gateway only answers 5xx for upstream trouble, and this upstream is healthy
    assert all(r.status < 500 for r in finals), out
    # llhttp on the upstream side never saw anything but valid HTTP/1.1
    assert up.errors == [], (data, up.raw)
    forwarded = up.complete
    answered = [r for r in finals if r.status == 200]
    assert len(forwarded) == len(answered), (data, forwarded, out)
    for m, r in zip(forwarded, answered, strict=True):
        assert r.body == b"ok:" + m.target + b":%d" % len(m.body)


SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(data=mutated())
async def test_mutated_requests(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    await _check(data, caplog)


@SETTINGS
@given(data=RANDOM)
async def test_random_bytes(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    await _check(data, caplog)


async def test_byte_at_a_time_delivery(caplog: pytest.LogCaptureFixture) -> None:
    """Every template, fed to the parser one byte per segment (callbacks see split tokens)."""
    import asyncio

    async with raw_upstream() as up, run_gateway(_cfg(up.url)) as gw:
        for tpl in TEMPLATES:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            for i in range(len(tpl)):
                writer.write(tpl[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)
            writer.write_eof()
            out = b""
            async with asyncio.timeout(3):
                while chunk := await reader.read(65536):
                    out += chunk
            writer.close()
            resps = parse_responses(out)
            assert resps and all(r.complete for r in resps), (tpl, out)
            assert {r.status for r in resps if r.status >= 200} == {200}, (tpl, out)
    # 1 + 1 + 1 + 3 + 1 + 1 + 1 + 1 requests in the templates, all forwarded exactly once
    assert len(up.complete) == 10
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
