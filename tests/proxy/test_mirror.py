"""Route-level ``mirror``: the shadow gets copies; nothing it does reaches the client."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from prometheus_client import REGISTRY

from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import free_port, run_gateway, run_upstream
from tests.proxy.keepalive import KeepAlive, named


def mirror_cfg(primary: str, shadow: str, route: str, **mirror: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "live": {"targets": [{"url": primary}]},
            "shadow": {"targets": [{"url": shadow}], "retries": {"attempts": 1}},
        },
        "routes": [
            {
                "name": route,
                "match": {"paths": ["/api"]},
                "upstream": "live",
                "mirror": {"upstream": "shadow", **mirror},
            }
        ],
    }


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def mirror_of(gw: Any) -> Any:
    return gw.gateway.graph_ref.current.routes[0].traffic.mirror


class HungShadow:
    """A shadow that records each copy, then hangs until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.copies: list[tuple[str, str, bytes, Headers]] = []
        self.arrived = asyncio.Condition()

    async def __call__(self, req: Request) -> Response:
        body = await req.body.read_all() if req.body is not None else b""
        async with self.arrived:
            self.copies.append((req.method, req.path, body, req.headers))
            self.arrived.notify_all()
        await self.release.wait()
        return Response(200, Headers(), b"late")

    async def wait_for(self, n: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.copies) >= n), 10)


async def test_hung_shadow_changes_nothing_for_the_client() -> None:
    shadow = HungShadow()
    async with run_upstream(named("live")) as live, run_upstream(shadow) as sh:
        async with run_gateway(mirror_cfg(live.url, sh.url, "hung", max_in_flight=50)) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                for i in range(5):
                    status, h, _ = await c.get(f"/api/get{i}", {"x-trace": str(i)})
                    assert status == 200 and h["x-backend"] == "live"
                    status, h, _ = await c.request("POST", "/api/post", body=b"payload-%d" % i)
                    assert status == 200 and h["x-backend"] == "live"
                # every client response is complete while all ten copies still hang
                await shadow.wait_for(10)
                assert not shadow.release.is_set()
                assert len(mirror_of(gw).tasks) == 10
                methods = [(m, p, b) for m, p, b, _ in shadow.copies]
                assert ("GET", "/api/get3", b"") in methods
                assert ("POST", "/api/post", b"payload-4") in methods
                gets = [h for m, _, _, h in shadow.copies if m == "GET"]
                assert sorted(h.get("x-trace") for h in gets) == ["0", "1", "2", "3", "4"]
                assert all(h.get("x-forwarded-for") == "127.0.0.1" for h in gets)
            finally:
                shadow.release.set()
                await c.aclose()


async def test_max_in_flight_drops_and_counts_copies() -> None:
    shadow = HungShadow()
    labels = {"route": "bounded", "upstream": "shadow", "reason": "max_in_flight"}
    before = sample("portway_mirror_dropped_total", labels)
    async with run_upstream(named("live")) as live, run_upstream(shadow) as sh:
        async with run_gateway(mirror_cfg(live.url, sh.url, "bounded", max_in_flight=3)) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                for _ in range(10):
                    status, _, _ = await c.get("/api/x")
                    assert status == 200
                await shadow.wait_for(3)
                m = mirror_of(gw)
                assert (m.sent, m.dropped) == (3, 7)
                assert sample("portway_mirror_dropped_total", labels) == before + 7
            finally:
                shadow.release.set()
                await c.aclose()


async def test_failing_or_dead_shadow_gives_zero_client_errors() -> None:
    async def boom(req: Request) -> Response:
        return Response(500, Headers(), b"shadow broke")

    async with run_upstream(named("live")) as live, run_upstream(boom) as sh:
        for route, url in (("fails", sh.url), ("dead", f"http://127.0.0.1:{free_port()}")):
            async with run_gateway(mirror_cfg(live.url, url, route)) as gw:
                c = await KeepAlive.open(gw.port)
                try:
                    for _ in range(30):
                        status, h, _ = await c.get("/api/x")
                        assert status == 200 and h["x-backend"] == "live"
                    m = mirror_of(gw)
                    assert m.sent == 30
                    # wait for the copies to end (answered 500 / refused): never the client's
                    await asyncio.wait_for(asyncio.gather(*m.tasks, return_exceptions=True), 10)
                finally:
                    await c.aclose()
        assert (
            sample(
                "portway_mirror_requests_total",
                {"route": "fails", "upstream": "shadow", "result": "5xx"},
            )
            >= 30
        )
        assert (
            sample(
                "portway_mirror_requests_total",
                {"route": "dead", "upstream": "shadow", "result": "error"},
            )
            >= 30
        )


async def test_sampling_is_exact_and_large_bodies_are_dropped() -> None:
    got: list[bytes] = []

    async def shadow(req: Request) -> Response:
        got.append(await req.body.read_all() if req.body is not None else b"")
        return Response(204, Headers(), b"")

    labels = {"route": "sampled", "upstream": "shadow", "reason": "body_not_held"}
    before = sample("portway_mirror_dropped_total", labels)
    async with run_upstream() as live, run_upstream(shadow) as sh:  # live echoes requests
        cfg = mirror_cfg(live.url, sh.url, "sampled", sample=0.1, max_body_bytes=16)
        async with run_gateway(cfg) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                for _ in range(200):
                    assert (await c.get("/api/x"))[0] == 200
                m = mirror_of(gw)
                assert m.sent == 20  # exactly 10 %: counter-based, not random
                await asyncio.wait_for(asyncio.gather(*m.tasks, return_exceptions=True), 10)
                assert len(got) == 20
                # a body over max_body_bytes is relayed to the live upstream, not copied
                for _ in range(10):
                    status, _, body = await c.request("POST", "/api/x", body=b"x" * 100)
                    assert status == 200 and orjson.loads(body)["body"] == "x" * 100
                assert m.sent == 20 and m.dropped == 1
                assert sample("portway_mirror_dropped_total", labels) == before + 1
            finally:
                await c.aclose()


async def test_expect_100_continue_body_is_held_and_copied() -> None:
    got: list[bytes] = []

    async def shadow(req: Request) -> Response:
        got.append(await req.body.read_all() if req.body is not None else b"")
        return Response(204, Headers(), b"")

    async with run_upstream() as live, run_upstream(shadow) as sh:
        async with run_gateway(mirror_cfg(live.url, sh.url, "expect")) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            try:
                writer.write(
                    b"POST /api/up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                    b"Expect: 100-continue\r\n\r\n"
                )
                first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert first.startswith(b"HTTP/1.1 100 ")
                writer.write(b"hello")
                head = b""
                while not head.startswith(b"HTTP/1.1 200"):  # further 100s may come first
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                body = orjson.loads(await reader.readexactly(length))
                assert body["body"] == "hello"
                await asyncio.wait_for(asyncio.gather(*mirror_of(gw).tasks), 5)
                assert got == [b"hello"]
            finally:
                writer.close()
