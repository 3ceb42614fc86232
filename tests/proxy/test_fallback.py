"""Route-level ``fallback`` (strangler fig): the new service first, the legacy one behind."""

from __future__ import annotations

from typing import Any

import orjson

from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import free_port, run_gateway, run_upstream
from tests.proxy.keepalive import KeepAlive


def fallback_cfg(new: str, legacy: str, **fallback: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "new": {"targets": [{"url": new}], "retries": {"attempts": 1}},
            "legacy": {"targets": [{"url": legacy}]},
        },
        "routes": [
            {
                "name": "strangler",
                "match": {"paths": ["/"]},
                "upstream": "new",
                "fallback": {"upstream": "legacy", **fallback},
            }
        ],
    }


class NewService:
    """Serves /migrated/*; 404 for the rest (with a body, as real services do)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, req: Request) -> Response:
        body = await req.body.read_all() if req.body is not None else b""
        self.seen.append((req.method, req.path, body))
        if req.path.startswith("/migrated"):
            return Response(200, Headers([(b"x-backend", b"new")]), b"new")
        if req.path.startswith("/unimplemented"):
            return Response(501, Headers(), b"nope")
        return Response(404, Headers([(b"content-type", b"text/plain")]), b"not here")


async def legacy(req: Request) -> Response:
    body = await req.body.read_all() if req.body is not None else b""
    return Response(
        200,
        Headers([(b"x-backend", b"legacy")]),
        orjson.dumps({"path": req.path, "body": body.decode()}),
    )


async def test_404_falls_back_to_legacy_and_the_response_says_who_served() -> None:
    new = NewService()
    async with run_upstream(new) as n, run_upstream(legacy) as old:
        async with run_gateway(fallback_cfg(n.url, old.url, on=[404, 501])) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                status, h, body = await c.get("/migrated/orders")
                assert (status, h["x-backend"], h["x-portway-upstream"]) == (200, "new", "new")
                status, h, body = await c.get("/legacy/report")
                assert (status, h["x-backend"], h["x-portway-upstream"]) == (
                    200,
                    "legacy",
                    "legacy",
                )
                assert orjson.loads(body)["path"] == "/legacy/report"
                status, h, _ = await c.get("/unimplemented/x")
                assert (status, h["x-portway-upstream"]) == (200, "legacy")
                # a POST whose body was held (within max_body_bytes) is resent whole
                status, h, body = await c.request("POST", "/legacy/form", body=b"a=1&b=2")
                assert (status, h["x-portway-upstream"]) == (200, "legacy")
                assert orjson.loads(body)["body"] == "a=1&b=2"
                assert ("POST", "/legacy/form", b"a=1&b=2") in new.seen
                # the same keep-alive connection keeps working after each fallback
                for _ in range(5):
                    assert (await c.get("/legacy/again"))[1]["x-backend"] == "legacy"
            finally:
                await c.aclose()


async def test_unlisted_status_and_unheld_body_are_not_resent() -> None:
    new = NewService()
    async with run_upstream(new) as n, run_upstream(legacy) as old:
        cfg = fallback_cfg(n.url, old.url, on=[404], max_body_bytes=4)
        async with run_gateway(cfg) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                status, h, body = await c.get("/unimplemented/x")  # 501 is not listed
                assert (status, body, h["x-portway-upstream"]) == (501, b"nope", "new")
                # a body over max_body_bytes streamed to the new service: not safe to resend
                status, h, body = await c.request("POST", "/legacy/big", body=b"0123456789")
                assert (status, body, h["x-portway-upstream"]) == (404, b"not here", "new")
            finally:
                await c.aclose()


async def test_connect_failure_falls_back() -> None:
    async with run_upstream(legacy) as old:
        cfg = fallback_cfg(f"http://127.0.0.1:{free_port()}", old.url)
        async with run_gateway(cfg) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                for path in ("/a", "/b"):
                    status, h, _ = await c.get(path)
                    assert (status, h["x-portway-upstream"]) == (200, "legacy")
                status, h, body = await c.request("PUT", "/c", body=b"{}")
                assert (status, h["x-portway-upstream"]) == (200, "legacy")
                assert orjson.loads(body)["body"] == "{}"
            finally:
                await c.aclose()
