"""``mock`` through a real gateway: fixed answers and OpenAPI examples, with no upstream."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.client import simple_request
from tests.helpers import run_gateway

SPEC = """
openapi: 3.1.0
info: {title: orders, version: "1"}
servers: [{url: "https://api.example.com/v1"}]
paths:
  /orders:
    get:
      operationId: listOrders
      responses:
        "200":
          description: ok
          content:
            application/json:
              examples:
                two: {value: [{id: 1}, {id: 2}]}
    post:
      responses:
        "400": {description: bad}
        "201":
          description: created
          headers: {}
          content:
            application/json:
              schema: {type: object, example: {id: 3, status: new}}
  /orders/mine:
    get:
      responses:
        "200":
          description: ok
          content:
            application/json:
              example: {mine: true}
  /orders/{id}:
    get:
      responses:
        "200": {$ref: "#/components/responses/Order"}
    delete:
      responses:
        "204": {description: gone}
  /health:
    get:
      responses:
        "200":
          description: ok
          content:
            text/plain:
              example: "up"
components:
  responses:
    Order:
      description: one order
      content:
        application/json:
          examples:
            first: {$ref: "#/components/examples/Order1"}
  examples:
    Order1: {value: {id: 7, total: 12.5}}
"""


def mock_route(name: str, path: str, cfg: dict[str, object]) -> dict[str, object]:
    return {"name": name, "match": {"paths": [path]}, "plugins": [{"name": "mock", "config": cfg}]}


async def test_fixed_answer_route_without_upstream() -> None:
    cfg = {
        "plugins": [{"name": "request_id"}],
        "routes": [
            mock_route(
                "fixed",
                "/fixed",
                {
                    "status": 200,
                    "body": {"ok": True},
                    "headers": {"content-type": "application/json", "x-mock": "1"},
                },
            ),
            mock_route("text", "/text", {"status": 418, "body": "short and stout"}),
        ],
    }
    async with run_gateway(cfg) as gw:
        a = await simple_request("GET", gw.url + "/fixed/anything")
        b = await simple_request("POST", gw.url + "/text", body=b"ignored")
        head = await simple_request("HEAD", gw.url + "/fixed")
    assert a.status == 200 and orjson.loads(a.body) == {"ok": True}
    assert a.headers.get("content-type") == "application/json" and a.headers.get("x-mock") == "1"
    assert a.headers.get("x-request-id")  # global plugins still run
    assert (b.status, b.body) == (418, b"short and stout")
    assert b.headers.get("content-type") == "text/plain; charset=utf-8"
    assert head.status == 200 and head.body == b""


async def test_openapi_examples_per_operation(tmp_path: Path) -> None:
    spec = tmp_path / "orders.yaml"
    spec.write_text(SPEC)
    cfg = {
        "routes": [mock_route("api", "/", {"openapi": str(spec), "headers": {"x-mock": "orders"}})]
    }
    async with run_gateway(cfg) as gw:
        listed = await simple_request("GET", gw.url + "/orders")
        created = await simple_request("POST", gw.url + "/v1/orders", body=b"{}")
        mine = await simple_request("GET", gw.url + "/orders/mine")  # literal beats template
        one = await simple_request("GET", gw.url + "/orders/42")
        gone = await simple_request("DELETE", gw.url + "/orders/42")
        health = await simple_request("GET", gw.url + "/health")
        unknown = await simple_request("GET", gw.url + "/customers")
        wrong_method = await simple_request("PUT", gw.url + "/orders")
    assert (listed.status, orjson.loads(listed.body)) == (200, [{"id": 1}, {"id": 2}])
    assert listed.headers.get("x-mock") == "orders"
    assert (created.status, orjson.loads(created.body)) == (201, {"id": 3, "status": "new"})
    assert orjson.loads(mine.body) == {"mine": True}
    assert (one.status, orjson.loads(one.body)) == (200, {"id": 7, "total": 12.5})
    assert one.headers.get("content-type") == "application/json"
    assert (gone.status, gone.body) == (204, b"")
    assert (health.status, health.body, health.headers.get("content-type")) == (
        200,
        b"up",
        "text/plain",
    )
    for r in (unknown, wrong_method):
        assert r.status == 404
        doc = orjson.loads(r.body)
        assert doc["code"] == "mock_not_found" and doc["status"] == 404


@pytest.mark.parametrize(
    "cfg, where, message",
    [
        ("{status: 99}", "status", "at least 200"),
        ("{openapi: /nonexistent/spec.yaml}", "openapi", "cannot read OpenAPI file"),
        ("{body: x, openapi: /nonexistent/spec.yaml}", "openapi", "cannot read"),
        ("{headers: {content-length: '3'}}", "headers", "set by the gateway"),
        ("{stauts: 200}", "stauts", ""),
    ],
)
def test_bad_config_rejected_with_path_and_line(cfg: str, where: str, message: str) -> None:
    text = f"routes:\n  - name: r\n    plugins:\n      - {{name: mock, config: {cfg}}}\n"
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "c.yaml")
    errs = ei.value.errors
    assert all(e.path != "routes[0].upstream" for e in errs), errs  # mock needs no upstream
    assert any(
        e.path.startswith("routes[0].plugins[0].config")
        and where in e.path + e.message
        and message in e.message
        and e.line == 4
        for e in errs
    ), errs


def test_not_an_openapi_document(tmp_path: Path) -> None:
    spec = tmp_path / "swagger.yaml"
    spec.write_text("swagger: '2.0'\npaths: {}\n")
    text = f"routes:\n  - name: r\n    plugins:\n      - {{name: mock, config: {{openapi: '{spec}'}}}}\n"
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "c.yaml")
    assert any("not an OpenAPI 3.x document" in e.message for e in ei.value.errors)
