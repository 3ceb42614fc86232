"""grpc_web: hand-made gRPC-Web requests (binary and text, HTTP/1.1 and h2c) through the
gateway to a real grpcio server, responses checked byte for byte; CORS with the cors
plugin; gateway errors as trailers-only gRPC-Web answers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from portway.http.client import simple_request
from tests.helpers import run_gateway
from tests.proxy.grpc.grpc_support import SERVICE, EchoServer

PATH = f"/{SERVICE}/Unary"
# Msg{text: "hi"} framed: flag 0, length 4, field 1 (tag 0x0a) length 2 "hi"
REQUEST = b"\x00\x00\x00\x00\x04\x0a\x02hi"
# Msg{text: "echo:hi"} framed
REPLY = b"\x00\x00\x00\x00\x09\x0a\x07echo:hi"
# grpcio's trailers, in its order (grpc-message is sent empty)
TRAILERS = b"grpc-status:0\r\ngrpc-message:\r\nx-trailer:t-hi\r\n"
EXPECTED = REPLY + b"\x80" + len(TRAILERS).to_bytes(4, "big") + TRAILERS


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    s = EchoServer().start()
    try:
        yield s
    finally:
        await asyncio.to_thread(s.stop)


def config(url: str, cors: bool = False) -> dict[str, Any]:
    plugins: list[dict[str, Any]] = [{"name": "grpc_web"}]
    if cors:
        plugins.insert(
            0,
            {
                "name": "cors",
                "config": {
                    "allow_origins": ["https://app.example"],
                    "allow_headers": ["content-type", "x-grpc-web", "x-user-agent"],
                    "expose_headers": ["grpc-status", "grpc-message"],
                },
            },
        )
    return {
        "upstreams": {"greeter": {"protocol": "h2c", "targets": [{"url": url}]}},
        "routes": [
            {
                "name": "greeter-web",
                "match": {
                    "paths": [f"/{SERVICE}/"],
                    "headers": {"content-type": "~^application/grpc-web"},  # the spelling
                },
                "upstream": "greeter",
                "plugins": plugins,
            }
        ],
    }


async def test_binary_over_http1_byte_for_byte(echo: EchoServer) -> None:
    async with run_gateway(config(echo.url)) as gw:
        r = await simple_request(
            "POST",
            gw.url + PATH,
            headers=[("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")],
            body=REQUEST,
        )
    assert r.status == 200
    assert r.headers.get("content-type") == "application/grpc-web+proto"
    assert r.body == EXPECTED


async def test_text_over_http1_byte_for_byte(echo: EchoServer) -> None:
    async with run_gateway(config(echo.url)) as gw:
        r = await simple_request(
            "POST",
            gw.url + PATH,
            headers=[("content-type", "application/grpc-web-text")],
            body=base64.b64encode(REQUEST),
        )
    assert r.status == 200
    assert r.headers.get("content-type") == "application/grpc-web-text+proto"
    assert r.body == base64.b64encode(EXPECTED)


async def curl(*args: str) -> bytes:
    p = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-m", "20", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await p.communicate()
    assert p.returncode == 0
    return out


async def test_binary_and_text_over_h2c_with_curl(echo: EchoServer, tmp_path: Any) -> None:
    req = tmp_path / "req.bin"
    req.write_bytes(REQUEST)
    txt = tmp_path / "req.txt"
    txt.write_bytes(base64.b64encode(REQUEST))
    async with run_gateway(config(echo.url)) as gw:
        out = await curl(
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc-web",
            "--data-binary",
            f"@{req}",
            gw.url + PATH,
        )
        assert out == EXPECTED
        out = await curl(
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/grpc-web-text",
            "--data-binary",
            f"@{txt}",
            gw.url + PATH,
        )
        assert out == base64.b64encode(EXPECTED)


async def test_cors_exposes_grpc_status_and_preflight(echo: EchoServer) -> None:
    async with run_gateway(config(echo.url, cors=True)) as gw:
        pre = await simple_request(
            "OPTIONS",
            gw.url + PATH,
            headers=[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type,x-grpc-web"),
                ("content-type", "application/grpc-web"),
            ],
        )
        assert pre.status in (200, 204)
        assert pre.headers.get("access-control-allow-origin") == "https://app.example"
        r = await simple_request(
            "POST",
            gw.url + PATH,
            headers=[("content-type", "application/grpc-web"), ("origin", "https://app.example")],
            body=REQUEST,
        )
    assert r.body == EXPECTED
    exposed = (r.headers.get("access-control-expose-headers") or "").lower()
    assert "grpc-status" in exposed and "grpc-message" in exposed


async def test_upstream_error_status_in_trailer_frame(echo: EchoServer) -> None:
    # Msg{text: "x", count: 5}: the server aborts with NOT_FOUND after no message
    body = b"\x0a\x01x\x18\x05"
    async with run_gateway(config(echo.url)) as gw:
        r = await simple_request(
            "POST",
            gw.url + PATH,
            headers=[("content-type", "application/grpc-web")],
            body=b"\x00" + len(body).to_bytes(4, "big") + body,
        )
    assert r.status == 200
    # trailers-only upstream answer: the status is in the headers, the body empty
    assert r.headers.get("grpc-status") == "5"
    assert r.headers.get("grpc-message") == "failed: x"
    assert r.body == b""
