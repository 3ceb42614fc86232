"""Real clients: curl over HTTP/2 (h2c prior knowledge) and curl's own
``Expect: 100-continue`` on HTTP/1.1, through validation and a JSON rewrite."""

from __future__ import annotations

import asyncio

import orjson

from tests.helpers import run_gateway, run_upstream, simple_config

PLUGINS = [
    {"name": "request_validation", "config": {"body_schema": {"required": ["name"]}}},
    {"name": "request_transformer", "config": {"json": {"set": {"via": "gw"}}}},
    {"name": "response_transformer", "config": {"json": {"remove": ["headers"]}}},
]


async def _curl(*args: str) -> bytes:
    p = await asyncio.create_subprocess_exec(
        "curl", "-s", "-m", "20", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await p.communicate()
    assert p.returncode == 0, p.returncode
    return out


async def test_h2c_and_expect_continue_with_curl() -> None:
    big = orjson.dumps({"name": "n", "pad": "x" * 4096})
    async with run_upstream() as up:
        async with run_gateway(simple_config(up.url, plugins=PLUGINS)) as gw:
            ct = ["-H", "content-type: application/json"]
            bad = await _curl("--http2-prior-knowledge", *ct, "-d", '{"x": 1}', gw.url + "/a")
            good = await _curl("--http2-prior-knowledge", *ct, "-d", '{"name": 1}', gw.url + "/a")
            expect = await _curl(
                "-i", *ct, "-H", "expect: 100-continue", "--data-binary", big, gw.url + "/b"
            )
    assert orjson.loads(bad)["violations"][0]["keyword"] == "required"
    echo = orjson.loads(good)
    assert "headers" not in echo and orjson.loads(echo["body"]) == {"name": 1, "via": "gw"}
    assert expect.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), expect[:200]
    assert expect.count(b"100 Continue") == 1
    _, _, body = expect.partition(b"\r\n\r\nHTTP/1.1 200 OK\r\n")[2].partition(b"\r\n\r\n")
    assert orjson.loads(orjson.loads(body)["body"])["via"] == "gw"
    assert up.requests[-1].headers.get("expect") is None
