"""Upstream response fields on the task-free path: a plain ``Connection`` value and
Content-Length are dropped by name (no set lookup), anything else hop-by-hop goes through the
general filter; either way nothing connection-specific reaches the client."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import answering, raw_upstream, run_gateway, simple_config


def _head_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    out = []
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        out.append((k.strip().lower(), v.strip()))
    return out


async def _twice(port: int) -> list[bytes]:
    """Two requests on one client connection (the second rides a pooled upstream one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        for _ in range(2):
            writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            n = dict(_head_fields(head)).get(b"content-length")
            body = await reader.readexactly(int(n)) if n is not None else b""
            out.append(head + body)
    finally:
        writer.close()
    return out


@pytest.mark.parametrize(
    ("fields", "dropped"),
    [
        (b"Connection: keep-alive\r\n", []),
        (b"Connection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n", [b"keep-alive"]),
        (b"Connection: keep-alive\r\nConnection: X-Secret\r\nX-Secret: 1\r\n", [b"x-secret"]),
        (b"Connection: x-secret, keep-alive\r\nX-Secret: 1\r\n", [b"x-secret"]),
        (b"", []),
    ],
)
async def test_connection_fields_never_reach_the_client(
    fields: bytes, dropped: list[bytes]
) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nServer: up\r\n" + fields + b"Content-Length: 2\r\nX-Kept: k\r\n\r\nok"
    )
    async with raw_upstream(answering(response)) as url, run_gateway(simple_config(url)) as gw:
        for raw in await _twice(gw.port):
            assert raw.startswith(b"HTTP/1.1 200 ")
            assert raw.endswith(b"\r\n\r\nok")
            fields_out = _head_fields(raw)
            names = [k for k, _ in fields_out]
            assert b"connection" not in names  # a kept-alive HTTP/1.1 client needs none
            for name in dropped:
                assert name not in names
            assert names.count(b"content-length") == 1
            assert (b"content-length", b"2") in fields_out
            assert (b"server", b"up") in fields_out and (b"x-kept", b"k") in fields_out
            assert (b"via", b"1.1 portway") in fields_out


async def test_upstream_close_is_not_relayed_and_connection_not_reused() -> None:
    response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with raw_upstream(answering(response)) as url, run_gateway(simple_config(url)) as gw:
        for raw in await _twice(gw.port):
            assert raw.endswith(b"\r\n\r\nok")
            assert b"connection" not in [k for k, _ in _head_fields(raw)]
