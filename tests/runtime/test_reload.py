"""Reloads never drop or misroute a request."""

from __future__ import annotations

import asyncio

import orjson

from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import run_gateway, run_upstream


def _named(name: str):  # type: ignore[no-untyped-def]
    async def h(req: Request) -> Response:
        return Response(200, Headers([(b"x-backend", name.encode())]), orjson.dumps({"b": name}))

    return h


def _cfg(a_url: str, b_url: str, flip: bool) -> dict:  # type: ignore[type-arg]
    # the two configs swap which path goes to which upstream, so a request served by the
    # wrong graph would be visible as a misroute
    first, second = ("a", "b") if flip else ("b", "a")
    return {
        "upstreams": {"a": {"targets": [{"url": a_url}]}, "b": {"targets": [{"url": b_url}]}},
        "routes": [
            {
                "name": "one",
                "match": {"paths": ["/one"]},
                "upstream": first,
                "plugins": [
                    {"name": "headers", "config": {"response": {"set": {"x-expect": first}}}}
                ],
            },
            {
                "name": "two",
                "match": {"paths": ["/two"]},
                "upstream": second,
                "plugins": [
                    {"name": "headers", "config": {"response": {"set": {"x-expect": second}}}}
                ],
            },
        ],
    }


async def test_100_reloads_under_keepalive_traffic_zero_failures() -> None:
    async with run_upstream(_named("a")) as a, run_upstream(_named("b")) as b:
        async with run_gateway(_cfg(a.url, b.url, True)) as gw:
            stop = asyncio.Event()
            counts = {"ok": 0, "bad": 0}

            async def client(path: bytes) -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
                while not stop.is_set():
                    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = dict(
                        ln.split(b": ", 1) for ln in head.split(b"\r\n")[1:] if b": " in ln
                    )
                    body = await reader.readexactly(int(lines[b"content-length"]))
                    if (
                        head.startswith(b"HTTP/1.1 200")
                        and lines.get(b"x-backend") == lines.get(b"x-expect")
                        and body
                    ):
                        counts["ok"] += 1
                    else:
                        counts["bad"] += 1
                writer.close()

            clients = [asyncio.create_task(client(p)) for p in (b"/one", b"/two") * 4]
            for i in range(100):
                await gw.reload(_cfg(a.url, b.url, i % 2 == 1))
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*clients)
            assert counts["bad"] == 0
            assert counts["ok"] > 200


async def test_bad_config_keeps_old_graph() -> None:
    import pytest

    from portway.runtime.gateway import ReloadError

    async with run_upstream(_named("a")) as a, run_gateway(_cfg(a.url, a.url, True)) as gw:
        before = gw.gateway.graph
        bad = _cfg(a.url, a.url, True)
        bad["routes"][0]["plugins"] = [{"name": "headers", "config": {"nope": 1}}]
        with pytest.raises(ReloadError):
            await gw.reload(bad)
        assert gw.gateway.graph is before
        assert gw.gateway.last_reload["result"] == "error"
