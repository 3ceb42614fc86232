"""The server reads the HTTP version off the request line when the line is the first line of
the bytes being parsed (``ServerConnection._version``) and asks the parser otherwise. Every
way a request line can sit in the bytes must give the version the client sent: it decides
keep-alive and the protocol the ``Via`` field names."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import UpstreamHandle, run_gateway, run_upstream, simple_config


def _vias(up: UpstreamHandle) -> list[str | None]:
    return [r.headers.get("via") for r in up.requests]


async def _exchange(port: int, pieces: list[bytes], pause: float = 0.05) -> bytes:
    """Write ``pieces`` as separate reads; return all bytes until the gateway closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for p in pieces:
            writer.write(p)
            await writer.drain()
            await asyncio.sleep(pause)
        async with asyncio.timeout(5):
            return await reader.read(-1)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        # whole request lines at the start of a read
        ([b"GET /a HTTP/1.0\r\nHost: x\r\n\r\n"], ["1.0 portway"]),
        # pipelined: the second request line is not at the start of the bytes
        (
            [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.0\r\nHost: x\r\n\r\n"],
            ["1.1 portway", "1.0 portway"],
        ),
        (
            [
                b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n"
                b"Host: x\r\nConnection: close\r\n\r\n"
            ],
            ["1.0 portway", "1.1 portway"],
        ),
        # the request line split across reads, in the version and in the target
        ([b"GET /a HT", b"TP/1.0\r\nHost: x\r\n\r\n"], ["1.0 portway"]),
        ([b"GET /a HTTP/1.", b"1\r\nHost: x\r\nConnection: close\r\n\r\n"], ["1.1 portway"]),
        ([b"GET /aaaa", b"aaa HTTP/1.0\r\nHost: x\r\n\r\n"], ["1.0 portway"]),
        # a request line that begins a later read after a body ended the previous one
        (
            [
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                b"GET /b HTTP/1.0\r\nHost: x\r\n\r\n",
            ],
            ["1.1 portway", "1.0 portway"],
        ),
        # a body and the next request line in one read
        (
            [
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.0\r\n"
                b"Host: x\r\n\r\n"
            ],
            ["1.1 portway", "1.0 portway"],
        ),
        # absolute-form target (the target the parser reports is the whole URI)
        ([b"GET http://x/a HTTP/1.0\r\nHost: x\r\n\r\n"], ["1.0 portway"]),
    ],
)
async def test_version_wherever_the_line_sits(pieces: list[bytes], expected: list[str]) -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        out = await _exchange(gw.port, pieces)
        # HTTP/1.0 without keep-alive, or "Connection: close", ends the connection: reading to
        # EOF returned, so the gateway closed it as the version said
        assert out.count(b"HTTP/1.1 200 ") == len(expected), out
        assert _vias(up) == expected


async def test_leading_empty_line_then_request() -> None:
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request-line;
    # whatever the parser decides, the version must not be guessed from the bytes
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        out = await _exchange(gw.port, [b"\r\nGET /a HTTP/1.0\r\nHost: x\r\n\r\n"])
        assert out.startswith(b"HTTP/1.1 ")
        if out.startswith(b"HTTP/1.1 200 "):
            assert _vias(up) == ["1.0 portway"]
        else:
            assert up.requests == []


async def test_keep_alive_after_an_http11_line() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            for _ in range(3):
                writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(n)
            assert _vias(up) == ["1.1 portway"] * 3
        finally:
            writer.close()
