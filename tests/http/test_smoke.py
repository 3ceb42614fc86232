from __future__ import annotations

import orjson

from tests.helpers import http_get, raw_request, run_gateway, run_upstream, simple_config


async def test_proxy_get_roundtrip() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        status, headers, body = await http_get(gw.url + "/a/b?x=1&y=%20")
        assert status == 200
        data = orjson.loads(body)
        assert data["path"] == "/a/b"
        assert data["query"] == "x=1&y=%20"
        hdrs = dict(data["headers"])
        assert hdrs["x-forwarded-for"] == "127.0.0.1"
        assert hdrs["via"] == "1.1 portway"
        assert headers.get("via") == "1.1 portway"


async def test_no_route_is_json_404() -> None:
    cfg = {
        "routes": [
            {
                "name": "t",
                "match": {"paths": ["=/only"]},
                "plugins": [{"name": "request_termination", "config": {"status": 200}}],
            }
        ]
    }
    async with run_gateway(cfg) as gw:
        status, _, body = await http_get(gw.url + "/other")
        assert status == 404
        assert orjson.loads(body)["status"] == 404


async def test_keepalive_and_pipelining_in_order() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        reqs = (
            b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
            + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        out = await raw_request(gw.port, reqs)
        assert out.count(b"HTTP/1.1 200 OK") == 6
        positions = [out.index(b'"path":"/p%d"' % i) for i in range(5)]
        assert positions == sorted(positions)
        assert out.rindex(b'"path":"/last"') > positions[-1]
