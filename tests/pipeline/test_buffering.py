"""pipeline/buffering.py: limits, media types, and failures attributed to whoever failed."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from portway.config.schema import GatewayConfig
from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.buffering import DEFAULT_MAX_BODY, BodyLimit, is_json, media_type
from portway.pipeline.context import RequestContext
from portway.routing.router import Router
from tests.helpers import run_gateway, run_upstream, simple_config


@pytest.mark.parametrize(
    "ct, json",
    [
        (b"application/json", True),
        (b"Application/JSON; charset=utf-8", True),
        (b"application/problem+json", True),
        (b"application/vnd.api+json ; x=1", True),
        (b"text/json", False),
        (b"application/jsonx", False),
        (b"text/plain", False),
        (None, False),
        (b"", False),
    ],
)
def test_is_json(ct: bytes | None, json: bool) -> None:
    assert is_json(ct) is json


def test_media_type() -> None:
    assert media_type(b" Text/Plain ; charset=x") == b"text/plain"


def _ctx(cfg: GatewayConfig, path: str) -> RequestContext:
    ctx = RequestContext(Request("GET", path, b"", Headers()))
    ctx.match = Router(cfg.routes).match("", "GET", path, Headers())
    return ctx


def test_limit_route_then_server_then_default() -> None:
    data: dict[str, Any] = simple_config("http://127.0.0.1:1", max_body_bytes="1KiB")
    data["routes"].append({"name": "other", "match": {"paths": ["/other"]}, "upstream": "u"})
    cfg = GatewayConfig.model_validate(data)
    assert BodyLimit(cfg).of(_ctx(cfg, "/x")) == 1024
    assert BodyLimit(cfg).of(_ctx(cfg, "/other")) == DEFAULT_MAX_BODY
    data["server"] = {"limits": {"max_body_bytes": "2KiB"}}
    cfg = GatewayConfig.model_validate(data)
    assert BodyLimit(cfg).of(_ctx(cfg, "/other")) == 2048
    assert BodyLimit(None).of(RequestContext(Request("GET", "/", b"", Headers()))) == (
        DEFAULT_MAX_BODY
    )


async def _until(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_client_leaving_mid_body_is_not_a_plugin_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    plugin = {"name": "request_validation", "config": {"body_schema": {"type": "object"}}}
    async with run_upstream() as up:
        async with run_gateway(simple_config(up.url, plugins=[plugin])) as gw:
            graph = gw.gateway.graph
            _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(
                b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"a": '
            )
            await writer.drain()
            await _until(lambda: graph.inflight == 1)
            writer.close()
            await _until(lambda: graph.inflight == 0)
    assert not up.requests
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures == [], [r.getMessage() for r in failures]
