"""examples/traffic.yaml (the runnable example of docs/traffic.md) does what the doc says,
on the `portway demo` backends; every YAML block of the doc loads."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from portway.config.loader import load_config_text
from portway.demo import start_backends
from portway.server.worker import Worker
from tests.helpers import free_port
from tests.proxy.keepalive import KeepAlive

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "traffic.md"
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[f"yaml{i}" for i in range(len(YAML_BLOCKS))])
def test_doc_yaml_blocks_load(block: str) -> None:
    if not block.lstrip().startswith(("listeners", "upstreams", "routes", "plugins")):
        block = "upstreams:\n  checkout-v1: {targets: [{url: 'http://127.0.0.1:1'}]}\n" + block
    load_config_text(block, "docs/traffic.md", env={})


async def test_the_runnable_example() -> None:
    ports = {"users": free_port(), "orders": free_port(), "products": free_port()}
    env = {
        "PORTWAY_PORT": str(free_port()),
        "PORTWAY_ADMIN_PORT": str(free_port()),
        "DEMO_USERS_PORT": str(ports["users"]),
        "DEMO_ORDERS_PORT": str(ports["orders"]),
        "DEMO_PRODUCTS_PORT": str(ports["products"]),
        "NEW_SHOP_PORT": str(free_port()),
    }
    cfg = load_config_text((ROOT / "examples" / "traffic.yaml").read_text(), "ex", env=env)
    backends = await start_backends(ports)
    w = Worker(cfg, admin=False)
    await w.start()
    c = await KeepAlive.open(int(env["PORTWAY_PORT"]))
    try:
        status, h, _ = await c.get("/checkout")
        assert status == 200 and h["set-cookie"].startswith("pw_canary=")
        assert h["x-backend"] in ("users", "orders")
        status, h, _ = await c.get("/checkout", {"x-canary": "1"})
        assert h["x-backend"] == "orders"
        status, h, body = await c.get("/shop/cart")
        assert (status, h["x-portway-upstream"], h["x-backend"]) == (200, "legacy", "products")
        status, h, _ = await c.get("/api/users", {"api-version": "1"})
        assert (status, h["x-backend"]) == (200, "users")
        assert h["deprecation"] == "@1767225600"
        assert h["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
        assert 'rel="deprecation"' in h["link"]
        status, _, body = await c.get("/api/users", {"api-version": "7"})
        assert status == 400 and orjson.loads(body)["versions"] == ["1", "2"]
        statuses = [(await c.get("/chaos", {"x-chaos": "on"}))[0] for _ in range(4)]
        assert sorted(statuses) == [200, 200, 503, 503]
        assert (await c.get("/chaos"))[0] == 200
    finally:
        await c.aclose()
        await w.shutdown()
        for s in backends:
            s.close()
