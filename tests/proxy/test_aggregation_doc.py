"""docs/aggregation.md stays true: each config block loads and serves what its curl lines say."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from portway.config.loader import load_config_text
from portway.http.client import simple_request
from portway.server.worker import Worker
from tests.helpers import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "aggregation.md"
FILES = dict(re.findall(r"```yaml\n# file: (\S+)\n(.*?)```", DOC.read_text(), re.S))
PRODUCTS = '{"query":"query Products { products(first: 10) { id name } }"}'
JSON = ("content-type", "application/json")

#: (method, path, headers, body, status, expected JSON body or header subset)
Check = tuple[str, str, list[tuple[str, str]], bytes, int, dict[str, Any]]
EXPECTED: dict[str, list[Check]] = {
    "aggregate.yaml": [
        (
            "GET",
            "/pages/product/7",
            [],
            b"",
            200,
            {
                "body": {
                    "product": {"id": 7, "sku": "SKU-7", "name": "Lamp"},
                    "reviews": {"items": [{"by": "ann", "stars": 5}], "average": 5},
                    "inventory": {"available": 3},
                }
            },
        ),
    ],
    "profiles.yaml": [
        ("GET", "/products", [], b"", 200, {"x-profile": None}),
        ("GET", "/products", [("x-client", "mobile")], b"", 200, {"x-profile": "mobile"}),
        ("GET", "/products", [("host", "partner.example.com")], b"", 401, {}),
        (
            "GET",
            "/products",
            [("host", "partner.example.com"), ("apikey", "acme-key")],
            b"",
            200,
            {},
        ),
        ("GET", "/internal", [("x-client", "mobile")], b"", 404, {}),
    ],
    "graphql.yaml": [
        ("POST", "/graphql", [JSON], PRODUCTS.encode(), 200, {}),
        ("POST", "/graphql", [JSON], PRODUCTS.encode(), 200, {}),
        ("POST", "/graphql", [JSON], PRODUCTS.encode(), 429, {}),
        (
            "POST",
            "/graphql",
            [JSON],
            b'{"query":"{ a { b { c { d { e { f { g } } } } } } }"}',
            400,
            {
                "body": {
                    "errors": [
                        {
                            "message": "query depth 7 exceeds the maximum of 6",
                            "extensions": {"code": "DEPTH_LIMIT"},
                        }
                    ]
                }
            },
        ),
        (
            "POST",
            "/graphql",
            [JSON],
            b'{"query":"{ __schema { types { name } } }"}',
            400,
            {},
        ),
    ],
}


def test_every_block_is_checked() -> None:
    assert sorted(FILES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_doc_example_serves_what_it_says(name: str) -> None:
    port = free_port()
    cfg = load_config_text(FILES[name].replace("127.0.0.1:8080", f"127.0.0.1:{port}"), name)
    w = Worker(cfg.model_copy(update={"admin": cfg.admin.model_copy(update={"enabled": False})}))
    await w.start()
    try:
        for method, path, headers, body, status, want in EXPECTED[name]:
            r = await simple_request(
                method, f"http://127.0.0.1:{port}{path}", headers=headers, body=body
            )
            assert r.status == status, (path, headers, r.body)
            for k, v in want.items():
                if k == "body":
                    assert json.loads(r.body) == v
                else:
                    assert r.headers.get(k) == v, k
    finally:
        await w.shutdown()
