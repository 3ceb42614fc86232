"""Liveness and readiness probes on the admin listener: no token needed, ``/readyz`` 503
while starting and while draining (in-flight requests still finish), 200 when serving."""

from __future__ import annotations

import asyncio

import orjson

from portway.admin.probes import with_probes
from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.server.health import Health
from tests.helpers import free_port, http_get, run_gateway, run_upstream, simple_config


def _req(path: str, method: str = "GET") -> Request:
    return Request(method=method, path=path, query=b"", headers=Headers(), version="1.1")


async def test_states_through_the_probe_handler() -> None:
    health = Health()

    async def api(request: Request) -> Response:
        return Response.json(401, {"error": "token"})

    handle = with_probes(api, health, lambda: "abc")
    r = await handle(_req("/readyz"))
    assert r.status == 503 and orjson.loads(r.body)["status"] == "starting"
    assert (await handle(_req("/healthz"))).status == 200
    health.loaded = True
    r = await handle(_req("/readyz"))
    assert r.status == 200 and orjson.loads(r.body) == {"status": "ready", "config_hash": "abc"}
    health.draining = True
    r = await handle(_req("/readyz"))
    assert r.status == 503 and orjson.loads(r.body)["status"] == "draining"
    assert (await handle(_req("/readyz", "POST"))).status == 405
    assert (await handle(_req("/status"))).status == 401  # everything else: the admin API


async def test_readyz_reports_draining_while_requests_finish() -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(req: Request) -> Response:
        arrived.set()
        await release.wait()
        return Response.json(200, {"ok": True})

    admin = free_port()
    async with run_upstream(slow) as up:
        cfg = simple_config(up.url)
        cfg["admin"] = {"enabled": True, "address": f"127.0.0.1:{admin}", "token": "s3cret"}
        async with run_gateway(cfg) as gw:
            base = f"http://127.0.0.1:{admin}"
            status, _, body = await http_get(base + "/readyz")
            assert status == 200 and orjson.loads(body)["status"] == "ready"
            assert orjson.loads(body)["config_hash"]
            assert (await http_get(base + "/healthz"))[0] == 200
            assert (await http_get(base + "/status"))[0] == 401  # the API still wants the token

            inflight = asyncio.create_task(http_get(gw.url + "/x", timeout=10))
            await arrived.wait()
            stopping = asyncio.create_task(gw.worker.shutdown())
            while not gw.worker.health.draining:
                await asyncio.sleep(0.01)
            status, _, body = await http_get(base + "/readyz")
            assert status == 503 and orjson.loads(body)["status"] == "draining"
            assert not inflight.done()
            release.set()
            assert (await inflight)[0] == 200
            await stopping
            try:
                await simple_request("GET", base + "/healthz", timeout=1)
                raise AssertionError("admin listener still open after shutdown")
            except OSError:
                pass
