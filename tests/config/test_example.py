"""examples/portway.yaml loads, and a gateway built from it serves its routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from helpers import http_get, raw_request, run_gateway, run_upstream

from portway.config.loader import config_hash, load_config, load_document

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "portway.yaml"


def test_example_loads_with_defaults_only() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert [r.name for r in cfg.routes] == [
        "users",
        "order-by-id",
        "orders",
        "catalog-api",
        "legacy-reports",
        "maintenance",
    ]
    assert cfg.listeners[0].address == "127.0.0.1:8080"
    assert cfg.admin.token == "change-me"
    # the alias shares the timeouts block
    assert cfg.upstreams["orders"].timeouts == cfg.upstreams["users"].timeouts
    assert cfg.upstreams["users"].retries.on == ["connect_error", "reset", "502", "503"]
    assert cfg.server.limits.max_body_bytes == 10 * 1024 * 1024
    assert [b.name for b in cfg.plugins] == ["request_id", "access_log"]


def test_example_env_overrides() -> None:
    env = {"PORTWAY_PORT": "9090", "PORTWAY_ADMIN_TOKEN": "s3cret"}
    doc = load_document(EXAMPLE.read_text(), str(EXAMPLE), env=env)
    assert doc.config.listeners[0].address == "127.0.0.1:9090"
    assert doc.config.admin.token == "s3cret"
    assert doc.line_of(("routes", 5, "plugins", 0, "config", "status")) is not None
    assert config_hash(doc.config) != config_hash(load_config(EXAMPLE, env={}))


def _pointed_at(data: dict[str, Any], url: str) -> dict[str, Any]:
    for up in data["upstreams"].values():
        up["targets"] = [{"url": url}]
        up["health"]["active"] = None
    data["plugins"] = [b for b in data["plugins"] if b["name"] != "access_log"]
    return data


async def test_gateway_serves_the_example() -> None:
    cfg = load_config(EXAMPLE, env={})
    async with run_upstream() as up:
        data = _pointed_at(cfg.model_dump(mode="json"), up.url)
        async with run_gateway(data) as gw:
            status, headers, body = await http_get(gw.url + "/users/7")
            assert status == 200
            echoed = orjson.loads(body)
            assert echoed["path"] == "/users/7"
            assert any(k.lower() == "x-request-id" for k, _ in echoed["headers"])
            assert headers.get("x-request-id")

            # a host route: simple_request always sends its own Host, so speak raw HTTP
            raw = await raw_request(
                gw.port,
                b"GET /api/catalog/items HTTP/1.1\r\nHost: eu.api.example.com\r\n"
                b"X-Api-Version: 2\r\nConnection: close\r\n\r\n",
            )
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"\r\ncache-control: public, max-age=60" in head.lower()
            assert orjson.loads(body)["path"] == "/items"

            status, _, body = await http_get(gw.url + "/admin-console")
            assert status == 503
            assert b"the console is down for maintenance" in body
