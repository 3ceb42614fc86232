"""Upstream response fields on the task-free path: a plain ``Connection`` value and
Content-Length are dropped by name (no set lookup), anything else hop-by-hop goes through the
general filter; either way nothing connection-specific reaches the client."""

from __future__ import annotations

import asyncio

import pytest

from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig
from portway.pipeline.registry import registry
from tests.helpers import answering, raw_upstream, run_gateway, simple_config

#: response fields as ``on_log`` saw them, one list per request
LOGGED: list[list[tuple[bytes, bytes]]] = []


class HeadLogger(Plugin[PluginConfig]):
    """Reads the relayed response's fields in ``on_log`` (they are parsed on first read)."""

    name = "t_head_logger"
    Config = PluginConfig

    def on_log(self, ctx: RequestContext) -> None:
        assert ctx.response is not None
        LOGGED.append(list(ctx.response.headers.raw()))


registry.register(HeadLogger)


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


# --- the lite head: the upstream connection's llhttp parser without per-field callbacks ------


async def test_plain_head_keeps_the_upstreams_spelling_and_order() -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nServer: up\r\nX-Mixed-Case: A b\r\nContent-Length: 2\r\n"
        b"Connection: keep-alive\r\nX-Last: z\r\n\r\nok"
    )
    async with raw_upstream(answering(response)) as url, run_gateway(simple_config(url)) as gw:
        _, second = await _twice(gw.port)
        # the second rode a pooled connection: the task-free path, lines passed whole
        assert gw.worker.app is not None and gw.worker.app.fast_requests >= 1
        assert b"\r\nServer: up\r\nX-Mixed-Case: A b\r\n" in second
        assert b"\r\nX-Last: z\r\n" in second
        # Content-Length is relayed as it came, where it came; Connection is not
        assert b"\r\nX-Mixed-Case: A b\r\nContent-Length: 2\r\nX-Last: z\r\n" in second
        assert _head_fields(second) == [
            (b"server", b"up"),
            (b"x-mixed-case", b"A b"),
            (b"content-length", b"2"),
            (b"x-last", b"z"),
            (b"via", b"1.1 portway"),
        ]


@pytest.mark.parametrize(
    "framing",
    [b"CONTENT-LENGTH: 2\r\n", b"content-length:\t2 \t\r\n", b"Content-Length:2\r\n"],
)
async def test_content_length_in_any_spelling_frames_the_body(framing: bytes) -> None:
    response = b"HTTP/1.1 200 OK\r\n" + framing + b"X-A: 1\r\n\r\nok"
    async with raw_upstream(answering(response)) as url, run_gateway(simple_config(url)) as gw:
        for raw in await _twice(gw.port):
            assert raw.endswith(b"\r\n\r\nok")
            fields = _head_fields(raw)
            assert fields.count((b"content-length", b"2")) == 1
            assert (b"x-a", b"1") in fields


async def test_head_trickled_byte_by_byte_is_relayed() -> None:
    response = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok"

    async def trickle(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        for i in range(len(response)):
            w.write(response[i : i + 1])
            await w.drain()
            await asyncio.sleep(0)
        return True

    async with raw_upstream(trickle) as url, run_gateway(simple_config(url)) as gw:
        for raw in await _twice(gw.port):
            assert raw.endswith(b"\r\n\r\nok")
            fields = _head_fields(raw)
            assert (b"server", b"up") in fields and (b"x-a", b"1") in fields
        assert gw.worker.app is not None and gw.worker.app.fast_requests >= 1


@pytest.mark.parametrize(
    ("response", "expect"),
    [
        # 1xx first: the whole message is parsed again field by field
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            [b"HTTP/1.1 103 Early Hints\r\n", b"link: </a.css>; rel=preload"],
        ),
        # a Via from the upstream is extended, not repeated
        (
            b"HTTP/1.1 200 OK\r\nVia: 1.0 cache\r\nContent-Length: 2\r\n\r\nok",
            [b"via: 1.0 cache, 1.1 portway"],
        ),
        # chunked with a trailer: the trailer reaches the client
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n",
            [b"transfer-encoding: chunked", b"2\r\nok\r\n0\r\nx-sum: 1\r\n\r\n"],
        ),
    ],
)
async def test_heads_the_lite_parse_does_not_take_are_parsed_again(
    response: bytes, expect: list[bytes]
) -> None:
    async with raw_upstream(answering(response)) as url, run_gateway(simple_config(url)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            for _ in range(2):
                writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
                data = b""
                while not (data.endswith(b"\r\n\r\nok") or data.endswith(b"0\r\nx-sum: 1\r\n\r\n")):
                    more = await asyncio.wait_for(reader.read(65536), 5)
                    assert more, data
                    data += more
                for piece in expect:
                    assert piece in data.replace(b"X-Sum", b"x-sum").replace(b"Via:", b"via:")
        finally:
            writer.close()
        assert gw.worker.app is not None and gw.worker.app.fast_requests >= 1


async def test_early_hints_drop_hop_by_hop_fields_on_both_paths() -> None:
    """A 103 is relayed by http/relay.py's rule on every path: hop-by-hop fields (and the
    ones HTTP/2 forbids) never reach the client, as on the HTTP/2 writer."""
    response = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    async with raw_upstream(answering(response)) as url, run_gateway(simple_config(url)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            for _ in range(2):  # a cold pool (the general path), then a warm one (task-free)
                writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                data = b""
                while not data.endswith(b"\r\n\r\nok"):
                    more = await asyncio.wait_for(reader.read(65536), 5)
                    assert more, data
                    data += more
                hints, _, final = data.partition(b"\r\n\r\n")
                assert hints.startswith(b"HTTP/1.1 103 Early Hints\r\n"), data
                lower = hints.lower()
                assert b"link: </a.css>; rel=preload" in lower
                assert b"keep-alive" not in lower and b"proxy-connection" not in lower
                assert final.startswith(b"HTTP/1.1 200 OK\r\n")
        finally:
            writer.close()
        app = gw.worker.app
        assert app is not None and app.fast_requests >= 1


async def test_http10_upstream_connection_is_not_reused() -> None:
    seen: list[int] = []

    async def http10(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        seen.append(n)
        w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        return True  # the upstream would keep it: the gateway must not, HTTP/1.0 said close

    async with raw_upstream(http10) as url, run_gateway(simple_config(url)) as gw:
        for _ in range(2):
            for raw in await _twice(gw.port):
                assert raw.endswith(b"\r\n\r\nok")
    assert seen == [1, 1, 1, 1]


async def test_on_log_sees_the_fields_that_were_sent() -> None:
    LOGGED.clear()
    response = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 2\r\nX-A:  1 \r\n\r\nok"
    cfg = simple_config("", plugins=[{"name": "t_head_logger", "config": {}}])
    async with raw_upstream(answering(response)) as url:
        cfg["upstreams"]["u"]["targets"][0]["url"] = url
        async with run_gateway(cfg) as gw:
            for raw in await _twice(gw.port):
                assert raw.endswith(b"\r\n\r\nok")
            assert gw.worker.app is not None and gw.worker.app.fast_requests >= 1
    assert len(LOGGED) == 2
    # the general path (the first request) and the task-free one (the second) agree
    for fields in LOGGED:
        assert sorted(fields) == [
            (b"content-length", b"2"),
            (b"server", b"up"),
            (b"via", b"1.1 portway"),
            (b"x-a", b"1"),
        ]


async def test_heads_of_changing_length_on_one_connection() -> None:
    """The lite scan guesses a head's line count from the last one on the connection; heads
    that grow or shrink, and bodies with blank lines in them, must not fool it."""
    bodies = [b"a\r\n\r\nb\r\n\r\n\r\nc", b"\r\n\r\n", b"ok", b"x\r\ny"]
    heads = [
        b"HTTP/1.1 200 OK\r\nA: 1\r\n",
        b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 201 Created\r\nA: 1\r\nB: 2\r\n",
    ]

    async def varying(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        i = (n - 1) % 4
        w.write(heads[i] + b"Content-Length: %d\r\n\r\n" % len(bodies[i]) + bodies[i])
        await w.drain()
        return True

    async with raw_upstream(varying) as url, run_gateway(simple_config(url)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            for k in range(12):
                i = k % 4
                writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                fields = dict(_head_fields(head))
                body = await reader.readexactly(int(fields[b"content-length"]))
                assert body == bodies[i]
                assert head.startswith(heads[i].split(b"\r\n")[0])
                for line in heads[i].split(b"\r\n")[1:-1]:
                    assert line.lower() + b"\r\n" in head.lower()
        finally:
            writer.close()
        assert gw.worker.app is not None and gw.worker.app.fast_requests >= 8
