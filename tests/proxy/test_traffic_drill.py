"""The drill: a canary moved 0 → 50 → 100 % through the admin API (PUT /config) while four
keep-alive clients keep sending; not one request fails, and each phase sees its weights."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson

from portway.config.schema import AdminConfig
from portway.http.client import simple_request
from tests.helpers import free_port, run_gateway, run_upstream
from tests.proxy.keepalive import KeepAlive, named
from tests.proxy.test_split import split_cfg

TOKEN = "drill-token"
PHASE_REQUESTS = 200


async def test_percent_moved_0_50_100_by_admin_api_with_zero_failures() -> None:
    from portway.admin.server import start_admin

    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        async with run_gateway(split_cfg(a.url, b.url, percent=0)) as gw:
            port = free_port()
            admin = AdminConfig.model_validate({"token": TOKEN, "address": f"127.0.0.1:{port}"})
            server = await start_admin(gw.gateway, admin)
            assert server is not None
            phase = "0"
            seen: dict[str, Counter[str]] = {}
            failures: list[str] = []
            stop = asyncio.Event()
            progress = asyncio.Condition()

            async def client() -> None:
                c = await KeepAlive.open(gw.port)
                try:
                    while not stop.is_set():
                        sent_in = phase  # the phase when the request was sent
                        try:
                            status, h, _ = await c.get("/checkout")
                        except (ConnectionError, asyncio.IncompleteReadError) as e:
                            failures.append(repr(e))
                            return
                        if status != 200:
                            failures.append(str(status))
                        async with progress:
                            seen.setdefault(sent_in, Counter())[h.get("x-backend", "?")] += 1
                            progress.notify_all()
                finally:
                    await c.aclose()

            async def wait_phase(p: str) -> None:
                async with progress:
                    await asyncio.wait_for(
                        progress.wait_for(
                            lambda: (
                                sum(seen.get(p, Counter()).values()) >= PHASE_REQUESTS
                                or bool(failures)
                            )
                        ),
                        30,
                    )

            async def put_percent(percent: int) -> None:
                doc: dict[str, Any] = gw.gateway.config.model_dump(mode="json")
                doc["routes"][0]["split"]["to"][0]["percent"] = percent
                r = await simple_request(
                    "PUT",
                    f"http://127.0.0.1:{port}/config",
                    body=orjson.dumps(doc),
                    headers=[
                        ("authorization", f"Bearer {TOKEN}"),
                        ("content-type", "application/json"),
                    ],
                )
                assert r.status == 200, r.body

            clients = [asyncio.create_task(client()) for _ in range(4)]
            try:
                await wait_phase("0")
                for percent in (50, 100):
                    # requests sent while the config is being applied may meet either graph
                    phase = f"switching to {percent}"
                    await put_percent(percent)
                    phase = str(percent)
                    await wait_phase(phase)
            finally:
                stop.set()
                await asyncio.gather(*clients)
                server.close()
            assert failures == []
            assert set(seen["0"]) == {"v1"}
            half = seen["50"]
            n = half["v1"] + half["v2"]
            assert set(half) == {"v1", "v2"} and n >= PHASE_REQUESTS
            # swrr: exact over each 2-request cycle of the new graph; requests sent while
            # switching may have taken a few of its turns
            switching = sum(seen.get("switching to 50", Counter()).values())
            assert abs(half["v1"] - half["v2"]) <= switching + 1
            assert set(seen["100"]) == {"v2"}
