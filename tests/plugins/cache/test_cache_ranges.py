"""Range requests answered from a stored complete response, through a real gateway."""

from __future__ import annotations

import time

import pytest

from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.plugins.cache.directives import format_http_date
from tests.helpers import http_get, run_gateway, run_upstream

BODY = b"01234567890"
LAST_MODIFIED = format_http_date(time.time() - 3600)


def config(url: str) -> dict[str, object]:
    return {
        "upstreams": {"u": {"targets": [{"url": url}]}},
        "routes": [
            {
                "name": "c",
                "match": {"paths": ["/"]},
                "upstream": "u",
                "plugins": [{"name": "cache"}],
            }
        ],
    }


async def handler(req: Request) -> Response:
    h = Headers.from_pairs(
        [
            ("Cache-Control", "max-age=3600"),
            ("ETag", '"v1"'),
            ("Last-Modified", LAST_MODIFIED),
            ("Date", format_http_date(time.time())),
            ("Content-Type", "text/plain"),
        ]
    )
    return Response(200, h, BODY)


CASES = [
    # (request headers, status, body, content-range)
    ([("Range", "bytes=0-1")], 206, b"01", "bytes 0-1/11"),
    ([("Range", "bytes=1-")], 206, b"1234567890", "bytes 1-10/11"),
    ([("Range", "bytes=-1")], 206, b"0", "bytes 10-10/11"),
    ([("Range", "bytes=5-100")], 206, b"567890", "bytes 5-10/11"),
    ([("Range", "bytes=-50")], 206, BODY, "bytes 0-10/11"),
    ([("Range", "bytes=11-")], 416, b"", "bytes */11"),
    ([("Range", "bytes=-0")], 416, b"", "bytes */11"),
    ([("Range", "bytes=0-1,3-4")], 200, BODY, None),  # several ranges: the whole body
    ([("Range", "items=0-1")], 200, BODY, None),  # another unit: ignored
    ([("Range", "bytes=3-1")], 200, BODY, None),  # invalid: ignored
    ([("Range", "bytes=0-1"), ("If-Range", '"v1"')], 206, b"01", "bytes 0-1/11"),
    ([("Range", "bytes=0-1"), ("If-Range", '"v0"')], 200, BODY, None),
    ([("Range", "bytes=0-1"), ("If-Range", 'W/"v1"')], 200, BODY, None),  # never weak
    ([("Range", "bytes=0-1"), ("If-Range", LAST_MODIFIED)], 206, b"01", "bytes 0-1/11"),
    (
        [("Range", "bytes=0-1"), ("If-Range", format_http_date(time.time() - 7200))],
        200,
        BODY,
        None,
    ),
    ([("Range", "bytes=0-1"), ("If-None-Match", '"v1"')], 304, b"", None),
]


@pytest.mark.parametrize(("headers", "status", "body", "content_range"), CASES)
async def test_range_from_a_stored_response(
    headers: list[tuple[str, str]], status: int, body: bytes, content_range: str | None
) -> None:
    async with run_upstream(handler) as up, run_gateway(config(up.url)) as gw:
        s, h, b = await http_get(gw.url + "/file")
        assert (s, b, h.get("x-cache")) == (200, BODY, "MISS")
        s, h, b = await http_get(gw.url + "/file", headers=headers)
        assert (s, b, h.get("x-cache")) == (status, body, "HIT")
        assert h.get("content-range") == content_range
        if status == 206:
            assert h.get("content-length") == str(len(body))
            assert h.get("etag") == '"v1"' and h.get("content-type") == "text/plain"
        assert len(up.requests) == 1  # answered by the cache


async def test_range_without_a_stored_response_goes_upstream_unstored() -> None:
    async with run_upstream(handler) as up, run_gateway(config(up.url)) as gw:
        s, h, b = await http_get(gw.url + "/cold", headers=[("Range", "bytes=0-1")])
        assert (s, b, h.get("x-cache")) == (200, BODY, "BYPASS")  # this origin ignores Range
        assert up.requests[0].headers.get("range") == "bytes=0-1"
        assert (await http_get(gw.url + "/cold"))[1].get("x-cache") == "MISS"
        # HEAD has no range semantics: its Range is ignored and the stored copy answers
        head = await simple_request("HEAD", gw.url + "/cold", headers=[("Range", "bytes=0-1")])
        assert head.status == 200 and head.headers.get("x-cache") == "HIT"
        assert head.headers.get("content-length") == str(len(BODY))
        assert len(up.requests) == 2
