"""The documented example plugin works through a real gateway."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import orjson

from portway.pipeline.registry import registry
from tests.helpers import http_get, run_gateway, run_upstream, simple_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugins" / "add_tenant.py"


def _load() -> type:
    spec = importlib.util.spec_from_file_location("add_tenant", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["add_tenant"] = mod
    spec.loader.exec_module(mod)
    return mod.AddTenantPlugin  # type: ignore[no-any-return]


async def test_add_tenant_example() -> None:
    registry.register(_load())
    async with run_upstream() as up:
        cfg = simple_config(
            up.url, plugins=[{"name": "add_tenant", "config": {"allowed": ["acme"]}}]
        )
        async with run_gateway(cfg) as gw:
            status, headers, body = await http_get(
                gw.url + "/x", headers=[("host", "acme.api.example.com")]
            )
            assert status == 200
            assert headers.get("x-served-tenant") == "acme"
            assert ["x-tenant", "acme"] in orjson.loads(body)["headers"]
            status, _, body = await http_get(
                gw.url + "/x", headers=[("host", "evil.api.example.com")]
            )
            assert status == 403 and orjson.loads(body)["error"] == "unknown tenant"
