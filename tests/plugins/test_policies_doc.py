"""docs/policies.md stays true: every config block loads and serves what its curl lines say."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
import zstandard

from portway.config.loader import load_config_text
from portway.http.client import simple_request
from tests.helpers import run_gateway

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"
FILES = dict(re.findall(r"```yaml\n# file: (\S+)\n(.*?)```", DOC.read_text(), re.S))
CONFIGS = sorted(name for name in FILES if not name.startswith("specs/"))

#: what the doc's curl lines show: (method, path, request headers, status, check)
Check = tuple[str, str, list[tuple[str, str]], int, dict[str, Any]]
EXPECTED: dict[str, list[Check]] = {
    "cors.yaml": [
        (
            "OPTIONS",
            "/api/orders",
            [
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "authorization, content-type"),
            ],
            204,
            {"access-control-allow-origin": "https://app.example.com"},
        ),
        (
            "GET",
            "/api",
            [("origin", "https://shop.example.org"), ("apikey", "demo-key")],
            200,
            {"access-control-allow-origin": "https://shop.example.org"},
        ),
        (
            "GET",
            "/api",
            [("origin", "https://app.example.com")],
            401,
            {"access-control-allow-origin": "https://app.example.com"},
        ),
    ],
    "ip.yaml": [
        ("GET", "/internal", [("x-forwarded-for", "10.1.2.3")], 200, {}),
        ("GET", "/internal", [("x-forwarded-for", "10.6.6.9")], 403, {}),
        ("GET", "/internal", [("x-forwarded-for", "::ffff:10.1.2.3")], 200, {}),
        ("GET", "/internal", [], 403, {}),
    ],
    "redirect.yaml": [
        ("GET", "/old/page?x=1", [], 301, {"location": "https://new.example.com/old/page?x=1"}),
        (
            "GET",
            "/users/7",
            [("host", "api.example.com")],
            302,
            {"location": "https://api.example.com/v2/people/7"},
        ),
        (
            "GET",
            "/shop?q=1",
            [("host", "example.com")],
            308,
            {"location": "https://example.com/shop?q=1"},
        ),
    ],
    "mock.yaml": [
        ("GET", "/status", [], 200, {"body": {"ok": True}}),
        ("GET", "/orders/5", [], 200, {"body": {"id": 1, "total": 9.5}}),
        ("GET", "/orders/5/x", [], 404, {}),
    ],
    "compression.yaml": [
        (
            "GET",
            "/report",
            [("accept-encoding", "gzip, br, zstd")],
            200,
            {"content-encoding": "zstd"},
        ),
        ("GET", "/report", [("accept-encoding", "gzip")], 200, {"content-encoding": "gzip"}),
        ("GET", "/report", [], 200, {"vary": "Accept-Encoding"}),
    ],
}


def test_every_config_block_is_checked() -> None:
    assert sorted(EXPECTED) == CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
async def test_example_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for fname, text in FILES.items():
        (tmp_path / fname).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / fname).write_text(text)
    monkeypatch.chdir(tmp_path)  # relative paths (the OpenAPI file) as the doc runs them
    load_config_text(FILES[name], name, env={})
    async with run_gateway(yaml.safe_load(FILES[name])) as gw:
        for method, path, headers, status, check in EXPECTED[name]:
            r = await simple_request(method, gw.url + path, headers=headers)
            assert r.status == status, (name, path, r.body)
            for key, want in check.items():
                if key == "body":
                    assert orjson.loads(r.body) == want
                else:
                    assert r.headers.get(key) == want, (name, path, key)
            ce = r.headers.get("content-encoding")
            if ce == "zstd":
                body = zstandard.ZstdDecompressor().decompressobj().decompress(r.body)
                assert orjson.loads(body)["rows"]
            elif ce == "gzip":
                assert orjson.loads(zlib.decompress(r.body, 31))["rows"]
