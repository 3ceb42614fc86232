"""A plugin's JSON 500 costs that request only: the keep-alive connection stays usable."""

from __future__ import annotations

import orjson

from tests.helpers import run_gateway, run_upstream, simple_config
from tests.pipeline.test_runner import KeepAlive, _b


async def test_plugin_500_keeps_keepalive_connection() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_b", fail_in="on_request")])
        cfg["routes"].append({"name": "ok", "match": {"paths": ["=/ok"]}, "upstream": "u"})
        async with run_gateway(cfg) as gw:
            conn = await KeepAlive.open(gw.port)
            try:
                status, hdrs, body = await conn.get("/x")
                assert status == 500 and orjson.loads(body)["code"] == "plugin_error"
                assert hdrs.get("connection") != "close"
                ok = await conn.get("/ok")
            finally:
                conn.close()
    assert ok[0] == 200
