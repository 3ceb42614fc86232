"""``compression`` through a real gateway: round-trips decoded by the real libraries,
negotiation, the cases it must leave alone, streaming, and the cache on the same route."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable

import brotli  # type: ignore[import-untyped]
import orjson
import pytest
import zstandard

from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import assert_plugin_config_error, raw_upstream, run_gateway, run_upstream

DOC = orjson.dumps(
    {"items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(400)]}
)


def decode(coding: str | None, body: bytes) -> bytes:
    if coding == "gzip":
        return zlib.decompress(body, 31)
    if coding == "br":
        out: bytes = brotli.decompress(body)
        return out
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    assert coding is None, coding
    return body


def vary(h: Headers) -> set[str]:
    return {t.strip().lower() for v in h.get_all("vary") for t in v.split(",") if t.strip()}


Handler = Callable[[Request], Awaitable[Response]]


def upstream_answering(body: bytes = DOC, status: int = 200, **fields: str) -> Handler:
    async def handler(req: Request) -> Response:
        h = Headers()
        h.set("content-type", "application/json")
        h.set("etag", '"v1"')
        h.set("accept-ranges", "bytes")
        for k, v in fields.items():
            h.set(k.replace("_", "-"), v)
        return Response(status, h, body)

    return handler


def config(up_url: str, plugins: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {
        "upstreams": {"u": {"targets": [{"url": up_url}]}},
        "routes": [
            {
                "name": "r",
                "match": {"paths": ["/"]},
                "upstream": "u",
                "plugins": plugins
                if plugins is not None
                else [
                    {
                        "name": "compression",
                        "config": {
                            "algorithms": ["zstd", "br", "gzip"],
                            "min_size": "1KiB",
                            "types": ["application/json", "text/*"],
                            "level": "default",
                        },
                    }
                ],
            }
        ],
    }


@pytest.mark.parametrize("coding", ["zstd", "br", "gzip"])
async def test_round_trip_decoded_by_the_real_library(coding: str) -> None:
    async with run_upstream(upstream_answering()) as up, run_gateway(config(up.url)) as gw:
        r = await simple_request("GET", gw.url + "/doc", headers=[("accept-encoding", coding)])
    h = r.headers
    assert r.status == 200 and h.get("content-encoding") == coding
    assert decode(coding, r.body) == DOC
    assert len(r.body) < len(DOC) // 3
    assert "accept-encoding" in vary(h)
    assert h.get("content-length") is None and h.get("transfer-encoding") == "chunked"
    assert h.get("etag") == 'W/"v1"' and h.get("accept-ranges") is None


@pytest.mark.parametrize(
    "accept, expected",
    [
        ("gzip, deflate, br, zstd", "zstd"),  # a browser: all q=1, the configured order wins
        ("gzip;q=0.5, br;q=0.8", "br"),
        ("gzip;q=1.0, br;q=0.8, zstd;q=0.1", "gzip"),
        ("*;q=0.2, zstd;q=0", "br"),
        ("x-gzip", "gzip"),
        ("GZIP", "gzip"),
        ("deflate", None),
        ("gzip;q=0, identity;q=0", None),  # nothing acceptable: identity rather than a 406
        ("br;q=abc", None),
        (None, None),
    ],
)
async def test_negotiation(accept: str | None, expected: str | None) -> None:
    headers = [("accept-encoding", accept)] if accept is not None else []
    async with run_upstream(upstream_answering()) as up, run_gateway(config(up.url)) as gw:
        r = await simple_request("GET", gw.url + "/doc", headers=headers)
    assert r.headers.get("content-encoding") == expected
    assert decode(expected, r.body) == DOC
    assert "accept-encoding" in vary(r.headers)  # the answer depends on it either way


@pytest.mark.parametrize(
    "method, handler, why",
    [
        ("GET", upstream_answering(DOC[:500]), "under min_size"),
        ("GET", upstream_answering(content_type="image/png"), "type not listed"),
        ("GET", upstream_answering(cache_control="public, no-transform"), "no-transform"),
        ("GET", upstream_answering(content_encoding="br"), "already encoded"),
        (
            "GET",
            upstream_answering(status=206, content_range=f"bytes 0-{len(DOC) - 1}/99999"),
            "range",
        ),
        ("GET", upstream_answering(b"", status=204), "no body"),
        ("HEAD", upstream_answering(), "HEAD"),
    ],
)
async def test_left_alone(method: str, handler: Handler, why: str) -> None:
    async with run_upstream(handler) as up, run_gateway(config(up.url)) as gw:
        r = await simple_request(method, gw.url + "/doc", headers=[("accept-encoding", "gzip, br")])
        sent = await handler(up.requests[0])
    upstream_ce = sent.headers.get("content-encoding")
    assert r.headers.get("content-encoding") == upstream_ce, why  # never compressed twice
    assert r.headers.get("etag") == '"v1"', why
    assert r.body == (sent.body if method == "GET" else b""), why  # byte for byte


async def test_gateway_made_body_is_compressed() -> None:
    body = {"rows": ["x" * 40] * 100}
    cfg = {
        "routes": [
            {
                "name": "m",
                "match": {"paths": ["/"]},
                "plugins": [
                    {"name": "compression", "config": {"algorithms": ["gzip"]}},
                    {"name": "mock", "config": {"body": body}},
                ],
            }
        ]
    }
    async with run_gateway(cfg) as gw:
        r = await simple_request("GET", gw.url + "/", headers=[("accept-encoding", "gzip")])
    assert r.headers.get("content-encoding") == "gzip"
    assert r.headers.get("content-length") == str(len(r.body))
    assert orjson.loads(decode("gzip", r.body)) == body


async def test_streams_without_buffering() -> None:
    """The first compressed chunk reaches the client, decodable, while the upstream still
    holds the rest of the body back."""
    release = asyncio.Event()
    part1 = b"data: " + b"first event " * 200 + b"\n\n"
    part2 = b"data: " + b"second event " * 200 + b"\n\n"

    async def handler(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(part1), part1)
        )
        await w.drain()
        await release.wait()
        w.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(part2), part2))
        await w.drain()
        return True

    async with raw_upstream(handler) as url, run_gateway(config(url)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept-Encoding: zstd\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert b"content-encoding: zstd" in head.lower()
            assert b"transfer-encoding: chunked" in head.lower()
            dec = zstandard.ZstdDecompressor().decompressobj()
            got = b""
            while len(got) < len(part1):  # decodable before the upstream sent part 2
                size = int((await asyncio.wait_for(reader.readline(), 5)).strip(), 16)
                got += dec.decompress((await reader.readexactly(size + 2))[:size])
            assert got == part1 and not release.is_set()
            release.set()
            while True:
                size = int((await asyncio.wait_for(reader.readline(), 5)).strip(), 16)
                data = (await reader.readexactly(size + 2))[:size]
                if size == 0:
                    break
                got += dec.decompress(data)
            assert got == part1 + part2
        finally:
            writer.close()


async def test_with_cache_on_the_same_route() -> None:
    """cache (stage traffic) sees the encoded response and its Vary: one stored variant per
    Accept-Encoding; an encoded body is never served to a client that cannot decode it."""
    handler = upstream_answering(cache_control="max-age=60")
    plugins = [
        {"name": "cache", "config": {"store": "memory"}},
        {"name": "compression", "config": {"algorithms": ["br", "gzip"]}},
    ]
    async with run_upstream(handler) as up, run_gateway(config(up.url, plugins)) as gw:

        async def get(accept: str | None) -> tuple[str | None, str | None, bytes]:
            hs = [("accept-encoding", accept)] if accept is not None else []
            r = await simple_request("GET", gw.url + "/doc", headers=hs)
            ce = r.headers.get("content-encoding")
            assert decode(ce, r.body) == DOC  # always decodable with what was asked for
            return ce, r.headers.get("x-cache"), r.body

        gz1 = await get("gzip")
        plain1 = await get(None)
        gz2 = await get("gzip")
        plain2 = await get(None)
        br1 = await get("br")
        br2 = await get("br")
        upstream_calls = len(up.requests)
    assert (gz1[0], gz1[1]) == ("gzip", "MISS")
    assert (plain1[0], plain1[1]) == (None, "MISS")
    assert (gz2[0], gz2[1]) == ("gzip", "HIT") and gz2[2] == gz1[2]
    assert (plain2[0], plain2[1]) == (None, "HIT")
    assert (br1[0], br1[1], br2[0], br2[1]) == ("br", "MISS", "br", "HIT")
    assert upstream_calls == 3


@pytest.mark.parametrize(
    "cfg, where, message",
    [
        ("{algorithms: [lz4]}", "algorithms", "zstd"),
        ("{algorithms: [gzip, gzip]}", "algorithms", "twice"),
        ("{level: 12}", "level", "1 (fastest) to 9"),
        ("{types: ['not a type']}", "types", "invalid media type"),
        ("{min_size: lots}", "min_size", ""),
    ],
)
def test_bad_config_rejected_with_path_and_line(cfg: str, where: str, message: str) -> None:
    assert_plugin_config_error("compression", cfg, where, message)
