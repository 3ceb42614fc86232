"""``response_transformer`` through a real gateway and upstream: JSON rewrites on nested
arrays with an exact Content-Length and no stale validators, status_map, header edits,
non-JSON and encoded bodies streamed untouched, chunked upstream bodies, oversize → 502."""

from __future__ import annotations

import asyncio
import gzip
import logging
from typing import Any

import orjson
import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import (
    ServingPath,
    answering,
    raw_upstream,
    run_gateway,
    run_upstream,
    simple_config,
)

DOC = {
    "id": 1,
    "password": "hunter2",
    "created": "2024-01-01",
    "items": [{"n": 1, "secret": "s1"}, {"n": 2, "secret": "s2"}, {"n": 3}],
    "groups": [{"members": [{"name": "a", "token": "t"}, {"name": "b", "token": "u"}]}],
}

CONF = {
    "headers": {"remove": ["server", "x-powered-by"], "add": {"x-api": "v2"}},
    "json": {
        "remove": ["password", "items[*].secret", "groups[*].members[*].token"],
        "rename": {"created": "createdAt", "items[*].n": "number"},
        "set": {"api_version": "2", "meta.via": "portway"},
    },
    "status_map": {"404": 410},
}


async def _upstream(req: Request) -> Response:
    h = Headers(
        [
            (b"server", b"backend/1.0"),
            (b"x-powered-by", b"php"),
            (b"etag", b'"v1"'),
            (b"content-md5", b"abc"),
        ]
    )
    if req.path == "/json":
        h.set("content-type", "application/json; charset=utf-8")
        return Response(200, h, orjson.dumps(DOC))
    if req.path == "/problem":
        h.set("content-type", "application/problem+json")
        return Response(404, h, orjson.dumps({"password": "x", "title": "gone"}))
    if req.path == "/text":
        h.set("content-type", "text/plain")
        return Response(200, h, b'{"password": "not json typed"}')
    if req.path == "/broken":
        h.set("content-type", "application/json")
        return Response(200, h, b'{"password": ')
    if req.path == "/gzip":
        h.set("content-type", "application/json")
        h.set("content-encoding", "gzip")
        return Response(200, h, gzip.compress(orjson.dumps(DOC)))
    if req.path == "/big":
        h.set("content-type", "application/json")
        return Response(200, h, orjson.dumps({"password": "p", "pad": "x" * 4000}))
    return Response(404, h, b"")


async def _get(
    paths: list[str], conf: dict[str, Any] = CONF, method: str = "GET", **route: Any
) -> list[tuple[int, Headers, bytes]]:
    out = []
    async with run_upstream(_upstream) as up:
        plugins = [{"name": "response_transformer", "config": conf}]
        async with run_gateway(simple_config(up.url, plugins=plugins, **route)) as gw:
            for p in paths:
                r = await simple_request(method, gw.url + p)
                out.append((r.status, r.headers, r.body))
    return out


async def test_json_rewrite_nested_arrays_exact_length_no_validators() -> None:
    [(status, h, body)] = await _get(["/json"])
    assert status == 200
    assert orjson.loads(body) == {
        "id": 1,
        "createdAt": "2024-01-01",
        "items": [{"number": 1}, {"number": 2}, {"number": 3}],
        "groups": [{"members": [{"name": "a"}, {"name": "b"}]}],
        "api_version": "2",
        "meta": {"via": "portway"},
    }
    assert list(orjson.loads(body)) == ["id", "createdAt", "items", "groups", "api_version", "meta"]
    assert h.get("content-length") == str(len(body))
    assert h.get("transfer-encoding") is None
    assert h.get("etag") is None and h.get("content-md5") is None
    assert h.get("server") is None and h.get("x-powered-by") is None
    assert h.get("x-api") == "v2"


async def test_status_map_and_problem_json() -> None:
    [(status, h, body)] = await _get(["/problem"])
    assert status == 410
    assert orjson.loads(body) == {"title": "gone", "api_version": "2", "meta": {"via": "portway"}}
    assert h.get("content-length") == str(len(body))


async def test_status_map_uses_standard_reason_phrase() -> None:
    async with run_upstream(_upstream) as up:
        plugins = [{"name": "response_transformer", "config": {"status_map": {404: 410}}}]
        async with run_gateway(simple_config(up.url, plugins=plugins)) as gw:
            r, w = await asyncio.open_connection("127.0.0.1", gw.port)
            w.write(b"GET /missing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data = await asyncio.wait_for(r.read(), 5)
            w.close()
    assert data.startswith(b"HTTP/1.1 410 Gone\r\n")


async def test_non_json_encoded_and_unparsable_bodies_pass_unchanged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="portway.plugins")
    (s1, h1, b1), (s2, h2, b2), (s3, h3, b3) = await _get(["/text", "/gzip", "/broken"])
    assert (s1, b1) == (200, b'{"password": "not json typed"}')
    assert h1.get("etag") == '"v1"' and h1.get("content-length") == str(len(b1))
    assert s2 == 200 and orjson.loads(gzip.decompress(b2)) == DOC
    assert h2.get("etag") == '"v1"'
    assert (s3, b3) == (200, b'{"password": ')
    assert "not valid JSON" in caplog.text and "gzip-encoded" in caplog.text
    # header rules still apply to all of them
    assert all(h.get("server") is None for h in (h1, h2, h3))


async def test_chunked_upstream_json_gets_content_length() -> None:
    body = orjson.dumps(DOC)
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b'ETag: W/"x"\r\n\r\n'
        + b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 16]), body[i : i + 16])
            for i in range(0, len(body), 16)
        )
        + b"0\r\n\r\n"
    )
    async with raw_upstream(answering(raw)) as url:
        plugins = [{"name": "response_transformer", "config": CONF}]
        async with run_gateway(simple_config(url, plugins=plugins)) as gw:
            r = await simple_request("GET", gw.url + "/json")
            r2 = await simple_request("GET", gw.url + "/json")  # the connection was reusable
    for resp in (r, r2):
        assert resp.status == 200
        assert resp.headers.get("content-length") == str(len(resp.body))
        assert resp.headers.get("transfer-encoding") is None and resp.headers.get("etag") is None
        assert "password" not in orjson.loads(resp.body)


async def test_oversize_json_response_fails_closed() -> None:
    [(status, _, body)] = await _get(["/big"], max_body_bytes=1024)
    assert status == 502 and orjson.loads(body)["code"] == "upstream_body_too_large"
    [(status, _, body)] = await _get(
        ["/big"], max_body_bytes=1024, conf={"headers": {"add": {"a": "b"}}}
    )
    assert status == 200 and b"password" in body  # no json rule: streamed as is


async def test_head_request_keeps_headers_and_has_no_body() -> None:
    [(status, h, body)] = await _get(["/json"], method="HEAD")
    assert status == 200 and body == b""
    assert h.get("server") is None


async def test_header_only_config_holds_on_both_paths(path: ServingPath) -> None:
    """Header edits only: the hook is sync, so a warm pool serves it task-free."""
    async with run_upstream(_upstream) as up:
        conf = {"headers": {"remove": ["server"]}}
        plugins = [{"name": "response_transformer", "config": conf}]
        async with run_gateway(path.config(simple_config(up.url, plugins=plugins))) as gw:
            await path.prepare(gw, status=404)  # (the upstream knows no other path)
            for _ in range(3):
                r = await simple_request("GET", gw.url + "/json")
                assert r.status == 200 and r.headers.get("server") is None
                assert r.headers.get("content-type") == "application/json; charset=utf-8"
                assert orjson.loads(r.body) == DOC
            path.assert_served(3)


@pytest.mark.parametrize(
    "conf, where, fragment",
    [
        ({"status_map": {"404": 99}}, "status_map", "final status"),
        ({"status_map": {"abc": 200}}, "status_map", "not a status code"),
        ({"json": {"remove": ["items[x]"]}}, "json.remove", "expected [*] or [N]"),
        ({"json": {"rename": {"items[0]": "x"}}}, "json.rename", "end with an object key"),
        ({"headers": {"remove": ["transfer-encoding"]}}, "headers.remove", "managed"),
    ],
)
def test_bad_config_rejected_with_path_and_line(
    conf: dict[str, Any], where: str, fragment: str
) -> None:
    route = {
        "name": "r",
        "upstream": "u",
        "plugins": [{"name": "response_transformer", "config": conf}],
    }
    doc = {"upstreams": {"u": {"targets": [{"url": "http://127.0.0.1:1"}]}}, "routes": [route]}
    with pytest.raises(ConfigError) as ei:
        load_config_text(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode(), "c.yaml")
    [err] = ei.value.errors
    assert f"routes[0].plugins[0].config.{where}" in str(err) and fragment in str(err), str(err)
    assert err.line is not None and err.line > 1


async def test_upstream_failing_mid_body_is_attributed_to_the_upstream() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    stalled = asyncio.Event()

    async def cut(h: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        w.write(head + b'{"a": 1,')
        await w.drain()
        return False  # closes the connection 92 bytes short

    async def stall(h: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        w.write(head + b'{"a": 1,')
        await w.drain()
        await stalled.wait()  # never sends the rest
        return False

    plugins = [{"name": "response_transformer", "config": {"json": {"remove": ["a"]}}}]
    async with raw_upstream(cut) as url:
        async with run_gateway(simple_config(url, plugins=plugins)) as gw:
            r = await simple_request("GET", gw.url + "/x")
    assert r.status == 502 and orjson.loads(r.body)["code"] == "bad_gateway"
    async with raw_upstream(stall) as url:
        cfg = simple_config(url, plugins=plugins, timeouts={"read": "300ms"})
        async with run_gateway(cfg) as gw:
            r = await simple_request("GET", gw.url + "/x")
        stalled.set()
    assert r.status == 504 and orjson.loads(r.body)["code"] == "upstream_timeout"


async def test_big_integers_are_kept_exact() -> None:
    raw = b'{"id": 123456789012345678901234567890, "password": "p"}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    async with raw_upstream(answering(head % len(raw) + raw)) as url:
        plugins = [{"name": "response_transformer", "config": {"json": {"remove": ["password"]}}}]
        async with run_gateway(simple_config(url, plugins=plugins)) as gw:
            r = await simple_request("GET", gw.url + "/x")
    assert r.body == b'{"id":123456789012345678901234567890}'


async def test_status_map_and_headers_apply_to_gateway_errors() -> None:
    from tests.helpers import free_port

    conf = {"status_map": {"502": 503}, "headers": {"add": {"x-edge": "1"}}}
    cfg = simple_config(
        f"http://127.0.0.1:{free_port()}",
        plugins=[{"name": "response_transformer", "config": conf}],
    )
    async with run_gateway(cfg) as gw:
        r = await simple_request("GET", gw.url + "/x")
    assert r.status == 503 and r.headers.get("x-edge") == "1"
    assert orjson.loads(r.body)["code"] == "upstream_connect_failed"  # body untouched
