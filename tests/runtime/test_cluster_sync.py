"""Config applied through one instance's admin API reaches another through Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from portway.http.client import simple_request
from tests.helpers import free_port, http_get, run_gateway, run_upstream


def _cfg(
    up: str, redis_url: str, prefix: str, paths: list[str], admin: int | None
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "state": {"redis_url": redis_url, "key_prefix": prefix, "sync_config": True},
        "upstreams": {"u": {"targets": [{"url": up}]}},
        "routes": [
            {"name": f"r{i}", "match": {"paths": [p]}, "upstream": "u"} for i, p in enumerate(paths)
        ],
    }
    if admin is not None:
        cfg["admin"] = {"enabled": True, "address": f"127.0.0.1:{admin}", "token": "t0ken"}
    return cfg


async def test_admin_put_on_one_instance_reaches_the_other(
    redis_url: str, redis_prefix: str
) -> None:
    admin = free_port()
    async with run_upstream() as up:
        a_cfg = _cfg(up.url, redis_url, redis_prefix, ["/a"], admin)
        async with (
            run_gateway(a_cfg) as a,
            run_gateway(_cfg(up.url, redis_url, redis_prefix, ["/a"], None)) as b,
        ):
            assert (await http_get(b.url + "/b"))[0] == 404
            import yaml

            new = _cfg(up.url, redis_url, redis_prefix, ["/a", "/b"], admin)
            new["listeners"] = [{"name": "public", "address": f"127.0.0.1:{a.port}"}]
            r = await simple_request(
                "PUT",
                f"http://127.0.0.1:{admin}/config",
                headers=[("authorization", "Bearer t0ken"), ("content-type", "application/yaml")],
                body=yaml.safe_dump(new).encode(),
            )
            assert r.status == 200, r.body
            assert (await http_get(a.url + "/b"))[0] == 200
            # the change travels through Redis pub/sub: a deadline, not a count of polls
            # (50 polls of 50 ms ran out on a loaded machine)
            deadline = asyncio.get_running_loop().time() + 20
            while asyncio.get_running_loop().time() < deadline:
                if (await http_get(b.url + "/b"))[0] == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await http_get(b.url + "/b"))[0] == 200
            assert b.gateway.cluster.applied >= 1


async def test_admin_drain_on_one_instance_reaches_the_other(
    redis_url: str, redis_prefix: str
) -> None:
    admin = free_port()
    async with run_upstream() as up, run_upstream() as other:

        def cfg(admin_port: int | None) -> dict[str, Any]:
            c = _cfg(up.url, redis_url, redis_prefix, ["/a"], admin_port)
            c["upstreams"]["u"]["targets"].append({"url": other.url})
            return c

        async with run_gateway(cfg(admin)) as a, run_gateway(cfg(None)) as b:
            await asyncio.wait_for(b.gateway.cluster.subscribed.wait(), 10)
            target = f"127.0.0.1:{up.port}"
            r = await simple_request(
                "POST",
                f"http://127.0.0.1:{admin}/upstreams/u/targets/{target}/drain",
                headers=[("authorization", "Bearer t0ken")],
            )
            assert r.status == 200, r.body

            def drained(gw: Any) -> bool:
                t = [t for t in gw.gateway.graph.upstreams["u"].targets if t.id == target]
                return bool(t and t[0].draining)

            assert drained(a)
            for _ in range(100):  # published through Redis: wait for it to arrive
                if drained(b):
                    break
                await asyncio.sleep(0.05)
            assert drained(b)
            before = len(up.requests)
            for _ in range(6):
                assert (await http_get(b.url + "/a"))[0] == 200
            assert len(up.requests) == before
            # an instance that starts later catches up on the drain
            async with run_gateway(cfg(None)) as c:
                await asyncio.wait_for(c.gateway.cluster.subscribed.wait(), 10)
                assert drained(c)
