"""The router inside a running gateway: real sockets, a real upstream."""

from __future__ import annotations

from typing import Any

import orjson

from tests.helpers import http_get, raw_request, run_gateway, run_upstream


def _config(upstream_url: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    for r in routes:
        r.setdefault("upstream", "u")
    return {"upstreams": {"u": {"targets": [{"url": upstream_url}]}}, "routes": routes}


def _body(raw: bytes) -> Any:
    return orjson.loads(raw.partition(b"\r\n\r\n")[2])


async def test_strip_prefix_forwards_the_remainder() -> None:
    routes = [{"name": "api", "match": {"paths": ["/api/v1/"]}, "strip_prefix": True}]
    async with run_upstream() as up, run_gateway(_config(up.url, routes)) as gw:
        for path, forwarded in [
            ("/api/v1/users/7", "/users/7"),
            ("/api/v1", "/"),
            ("/api/v1/", "/"),
        ]:
            status, _, body = await http_get(gw.url + path)
            assert status == 200
            assert orjson.loads(body)["path"] == forwarded
        status, _, _ = await http_get(gw.url + "/api/v1x")
        assert status == 404


async def test_template_params_feed_rewrite_and_priority_holds() -> None:
    routes = [
        {"name": "any", "match": {"paths": ["/users"]}},
        {"name": "one", "match": {"paths": ["/users/{id}"]}, "rewrite": "/v2/people/{id}"},
        {"name": "me", "match": {"paths": ["=/users/me"]}, "rewrite": "/self"},
    ]
    async with run_upstream() as up, run_gateway(_config(up.url, routes)) as gw:
        cases = [
            ("/users/42", "/v2/people/42"),
            ("/users/me", "/self"),
            ("/users/4/x", "/users/4/x"),
        ]
        for path, forwarded in cases:
            status, _, body = await http_get(gw.url + path)
            assert status == 200, path
            assert orjson.loads(body)["path"] == forwarded


async def test_method_mismatch_is_405_with_allow() -> None:
    routes = [
        {"name": "read", "match": {"paths": ["/items/{id}"], "methods": ["GET"]}},
        {"name": "write", "match": {"paths": ["/items/{id}"], "methods": ["PUT", "DELETE"]}},
    ]
    async with run_upstream() as up, run_gateway(_config(up.url, routes)) as gw:
        out = await raw_request(
            gw.port, b"POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 2.0, False
        )
        head = out.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 405")
        assert b"\r\nallow: delete, get, put" in head
        assert _body(out)["status"] == 405
        status, _, _ = await http_get(gw.url + "/items/1")
        assert status == 200
        status, _, _ = await http_get(gw.url + "/nothing")
        assert status == 404


async def test_hosts_and_headers_select_routes() -> None:
    routes = [
        {"name": "base", "match": {"paths": ["/"]}, "rewrite": "/base"},
        {"name": "v2", "match": {"paths": ["/"], "headers": {"x-api": "~v2(\\.\\d+)?"}}},
        {"name": "wild", "match": {"paths": ["/"], "hosts": ["*.example.com"]}, "rewrite": "/w"},
        {"name": "exact", "match": {"paths": ["/"], "hosts": ["api.example.com"]}, "rewrite": "/e"},
    ]
    cases = [
        (b"api.example.com", b"", "/e"),
        (b"API.example.com:8080", b"", "/e"),
        (b"www.example.com", b"", "/w"),
        (b"example.com", b"", "/base"),
        (b"example.com", b"X-Api: v2.1\r\n", "/p"),
        (b"example.com", b"X-Api: v3\r\n", "/base"),
    ]
    async with run_upstream() as up, run_gateway(_config(up.url, routes)) as gw:
        for host, extra, forwarded in cases:
            out = await raw_request(
                gw.port, b"GET /p HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n", 2.0, False
            )
            assert out.startswith(b"HTTP/1.1 200"), (host, out[:200])
            assert _body(out)["path"] == forwarded, host
