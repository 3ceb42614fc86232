"""``request_validation`` with ``openapi``: an OpenAPI 3.1 document (path params, query,
headers, JSON body with ``$ref``) and a 3.0 one (``nullable``, boolean exclusiveMinimum),
through a real gateway and upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from portway.http.client import simple_request
from tests.helpers import run_gateway, run_upstream, simple_config

SPEC_31 = """
openapi: 3.1.0
info: {title: orders, version: "1"}
servers: [{url: "https://api.example.com/api"}]
paths:
  /orders:
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
        - {name: status, in: query, schema: {type: array, items: {enum: [open, closed]}}}
        - {name: x-tenant, in: header, required: true, schema: {type: string, pattern: "^t-"}}
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/NewOrder"}
  /orders/{id}:
    parameters:
      - {$ref: "#/components/parameters/OrderId"}
    get: {}
    delete:
      parameters:
        - {name: force, in: query, required: true, schema: {type: boolean}}
  /orders/latest:
    get: {}
components:
  parameters:
    OrderId: {name: id, in: path, required: true, schema: {type: integer, minimum: 1}}
  schemas:
    NewOrder:
      type: object
      required: [sku, qty]
      additionalProperties: false
      properties:
        sku: {type: string, minLength: 3}
        qty: {type: integer, exclusiveMinimum: 0}
        note: {type: [string, "null"]}
        lines: {type: array, items: {$ref: "#/components/schemas/Line"}}
    Line:
      type: object
      required: [n]
      properties: {n: {type: integer}}
"""

SPEC_30 = """
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /things/{name}:
    put:
      parameters:
        - {name: name, in: path, required: true, schema: {type: string, maxLength: 5}}
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                price: {type: number, minimum: 0, exclusiveMinimum: true}
                label: {type: string, nullable: true}
          text/plain:
            schema: {type: string}
"""

TENANT = [("x-tenant", "t-1")]
JSON = [("content-type", "application/json")]


async def _run(
    tmp_path: Path, spec: str, calls: list[tuple[str, str, list[tuple[str, str]], Any]]
) -> list[tuple[int, Any]]:
    f = tmp_path / "spec.yaml"
    f.write_text(spec)
    out: list[tuple[int, Any]] = []
    async with run_upstream() as up:
        plugin = {"name": "request_validation", "config": {"openapi": str(f)}}
        async with run_gateway(simple_config(up.url, plugins=[plugin])) as gw:
            for method, path, headers, body in calls:
                raw = (
                    b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
                )
                r = await simple_request(method, gw.url + path, headers=headers, body=raw)
                out.append((r.status, orjson.loads(r.body)))
    return out


def _v(answer: Any) -> list[tuple[str, str | None, str, str]]:
    return sorted(
        (v["in"], v.get("name"), v["pointer"], v["keyword"]) for v in answer["violations"]
    )


async def test_openapi_31_query_headers_path_and_body(tmp_path: Path) -> None:
    good_order = {"sku": "abc", "qty": 2, "note": None, "lines": [{"n": 1}]}
    results = await _run(
        tmp_path,
        SPEC_31,
        [
            ("GET", "/api/orders?limit=10&status=open&status=closed", TENANT, None),
            ("GET", "/api/orders?limit=0&status=lost", [("x-tenant", "nope")], None),
            ("GET", "/api/orders?limit=ten", [], None),
            ("POST", "/api/orders", TENANT + JSON, good_order),
            ("POST", "/api/orders", JSON, {"sku": "a", "qty": 0, "extra": 1, "lines": [{}]}),
            ("POST", "/api/orders", [], None),
            ("POST", "/api/orders", [("content-type", "text/plain")], b"hi"),
            ("GET", "/api/orders/7", [], None),
            ("GET", "/api/orders/0", [], None),
            ("GET", "/api/orders/latest", [], None),  # literal path wins over /orders/{id}
            ("DELETE", "/api/orders/7?force=true", [], None),
            ("DELETE", "/api/orders/7?force=maybe", [], None),
            ("GET", "/api/nothing", [], None),
            ("PATCH", "/api/orders", JSON, {}),
        ],
    )
    statuses = [s for s, _ in results]
    assert statuses == [200, 400, 400, 200, 400, 400, 415, 200, 400, 200, 200, 400, 400, 400]
    assert _v(results[1][1]) == [
        ("header", "x-tenant", "", "pattern"),
        ("query", "limit", "", "minimum"),
        ("query", "status", "/0", "enum"),
    ]
    assert _v(results[2][1]) == [
        ("header", "x-tenant", "", "required"),
        ("query", "limit", "", "type"),
    ]
    assert _v(results[4][1]) == [
        ("body", None, "", "additionalProperties"),
        ("body", None, "/lines/0", "required"),
        ("body", None, "/qty", "exclusiveMinimum"),
        ("body", None, "/sku", "minLength"),
    ]
    assert _v(results[5][1]) == [("body", None, "", "required")]
    assert results[6][1]["code"] == "unsupported_media_type"
    assert _v(results[8][1]) == [("path", "id", "", "minimum")]
    assert _v(results[11][1]) == [("query", "force", "", "type")]
    assert _v(results[12][1]) == [("path", None, "", "path")]
    assert _v(results[13][1]) == [("path", None, "", "method")]


async def test_openapi_30_nullable_exclusive_minimum_and_other_media(tmp_path: Path) -> None:
    results = await _run(
        tmp_path,
        SPEC_30,
        [
            ("PUT", "/things/abc", JSON, {"price": 1.5, "label": None}),
            ("PUT", "/things/abcdef", JSON, {"price": 0, "label": 3}),
            ("PUT", "/things/abc", [("content-type", "text/plain")], b"free text"),
        ],
    )
    assert [s for s, _ in results] == [200, 400, 200]
    assert _v(results[1][1]) == [
        ("body", None, "/label", "type"),
        ("body", None, "/price", "exclusiveMinimum"),  # draft 4 form: minimum 0 excluded
        ("path", "name", "", "maxLength"),
    ]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("openapi: 2.0\npaths: {}", "only OpenAPI 3.0 and 3.1"),
        ("openapi: 3.1.0\n", "no `paths`"),
        (
            "openapi: 3.1.0\npaths:\n  /a/{id}:\n    get: {}\n",
            "path parameter 'id' is not declared",
        ),
        (
            "openapi: 3.1.0\npaths:\n  /a:\n    post:\n      requestBody:\n        content:\n"
            "          application/json: {schema: {type: 12}}\n",
            "invalid JSON Schema",
        ),
        ("openapi: 3.1.0\npaths: [unclosed", "not valid YAML"),
    ],
)
def test_bad_documents_are_config_errors(tmp_path: Path, spec: str, fragment: str) -> None:
    from portway.config.errors import ConfigError
    from portway.config.loader import load_config_text

    f = tmp_path / "bad.yaml"
    f.write_text(spec)
    text = (
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:1'}]}}\n"
        "routes:\n"
        "  - name: r\n"
        "    upstream: u\n"
        "    plugins:\n"
        "      - name: request_validation\n"
        "        config:\n"
        f"          openapi: {f}\n"
    )
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "c.yaml")
    [err] = ei.value.errors
    assert fragment in str(err), str(err)
    assert "routes[0].plugins[0].config.openapi" in str(err) and err.line == 8
