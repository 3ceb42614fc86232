"""The upstream exchange (proxy/exchange.py) releases its connection exactly once: after
requests that end in every way the general path knows, the target's in-flight count is back
to zero and no connection sits twice in the pool (which would hand one socket to two
requests)."""

from __future__ import annotations

import asyncio

from tests.helpers import raw_request, raw_upstream, run_gateway, simple_config


async def test_every_ending_releases_the_connection_once() -> None:
    opened: list[int] = []
    retried: list[int] = []

    async def upstream(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        if n == 1:
            opened.append(1)
        line = head.split(b"\r\n", 1)[0]
        if b"/retry" in line and not retried:
            retried.append(n)
            w.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
        elif line.startswith(b"HEAD"):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        elif b"/empty" in line:
            w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        return True

    async with raw_upstream(upstream) as url, raw_upstream(upstream) as url2:
        cfg = simple_config(url)
        cfg["upstreams"]["u"]["targets"].append({"url": url2})
        cfg["upstreams"]["u"]["retries"] = {"attempts": 2, "on": ["503"]}
        async with run_gateway(cfg) as gw:
            targets = gw.gateway.graph_ref().upstreams["u"].targets
            for data in (
                b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                b"HEAD /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                b"GET /empty HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                b"GET /retry HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            ):
                out = await raw_request(gw.port, data)
                assert out.startswith((b"HTTP/1.1 200", b"HTTP/1.1 204")), out
                for target in targets:
                    assert target.in_flight == 0
                    idle = target.pool.idle_stack()
                    assert len(idle) == len({id(c) for c in idle}), "a connection pooled twice"
    # the retried attempt's connection was given up (its 503 body not read), every other
    # answer was read to its end and its connection reused: at most one more connection
    # than targets (round robin takes both)
    assert retried and 2 <= len(opened) <= 3, (retried, opened)
