"""docs/transformation.md stays true: its echo upstream, OpenAPI file and gateway config run
as written, and the requests it shows get the answers it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.client import simple_request
from tests.helpers import free_port, run_gateway, wait_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "transformation.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.S)


def _file(first_line: str) -> str:
    return next(body for _, body in BLOCKS if body.startswith(first_line))


def test_every_yaml_block_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "orders.yaml").write_text(_file("# specs/orders.yaml"))
    monkeypatch.chdir(tmp_path)
    load_config_text(_file("# portway.yaml"), "portway.yaml", env={})
    for lang, body in BLOCKS:
        if lang == "yaml" and body.startswith("- name:"):  # a plugin binding on its own
            binding = yaml.safe_load(body)[0]
            if binding["name"] == "request_validation":
                binding["config"].pop("body_schema")  # the block shows both alternatives
            doc = {
                "upstreams": {"u": {"targets": [{"url": "http://127.0.0.1:1"}]}},
                "routes": [{"name": "r", "upstream": "u", "plugins": [binding]}],
            }
            load_config_text(orjson.dumps(doc).decode(), "docs", env={})


def test_error_example_is_verbatim() -> None:
    text = next(body for lang, body in BLOCKS if lang == "text")
    source = (
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:1'}]}}\nroutes:\n  - name: r\n"
        "    upstream: u\n    plugins:\n      - name: request_validation\n        config:\n"
        "          openapi: specs/order.yaml\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(source, "c.yaml", env={})
    assert str(info.value) == text.rstrip("\n")


async def test_the_walkthrough_runs_as_documented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "orders.yaml").write_text(_file("# specs/orders.yaml"))
    (tmp_path / "echo.py").write_text(_file("# echo.py"))
    monkeypatch.chdir(tmp_path)
    port = free_port()
    echo = subprocess.Popen([sys.executable, "echo.py", str(port)], cwd=tmp_path)
    try:
        await wait_port(port)
        text = _file("# portway.yaml").replace("127.0.0.1:9000", f"127.0.0.1:{port}")
        cfg: dict[str, Any] = yaml.safe_load(text)
        async with run_gateway(cfg) as gw:
            await _walkthrough(gw.url)
    finally:
        echo.terminate()
        echo.wait(10)


async def _walkthrough(base: str) -> None:
    json_ct = [("content-type", "application/json")]

    r = await simple_request("POST", base + "/users", headers=json_ct, body=b'{"name": 5}')
    a = orjson.loads(r.body)
    assert (r.status, a["code"]) == (400, "validation_failed")
    assert a["violations"] == [
        {
            "in": "body",
            "pointer": "/name",
            "message": '5 is not of type "string"',
            "keyword": "type",
        }
    ]

    r = await simple_request(
        "POST", base + "/orders?dry_run=perhaps", headers=json_ct, body=b'{"sku": "abc", "qty": 0}'
    )
    a = orjson.loads(r.body)
    assert r.status == 400
    assert [(v["in"], v["pointer"], v["keyword"]) for v in a["violations"]] == [
        ("query", "", "type"),
        ("body", "/sku", "pattern"),
        ("body", "/qty", "minimum"),
    ]
    assert a["violations"][0]["name"] == "dry_run"

    r = await simple_request("GET", base + "/orders/0")
    assert r.status == 400
    r = await simple_request(
        "POST", base + "/orders", headers=[("content-type", "text/plain")], body=b"x"
    )
    assert r.status == 415
    r = await simple_request(
        "POST", base + "/orders?dry_run=true", headers=json_ct, body=b'{"sku": "ABC-1", "qty": 2}'
    )
    assert r.status == 200

    r = await simple_request(
        "POST",
        base + "/legacy/items?debug=1&q=a",
        headers=[("x-old", "1"), *json_ct],
        body=b'{"user_id": 7, "internal": true}',
    )
    assert r.status == 200
    a = orjson.loads(r.body)
    assert a["path"] == "/v2/items?q=a&v=2"
    seen = {k.lower(): v for k, v in a["headers"].items()}
    assert seen["x-new"] == "1" and seen["x-tenant"] == "acme" and "x-old" not in seen
    assert orjson.loads(a["body"]) == {"userId": 7, "meta": {"source": "gateway"}}
    assert seen["content-length"] == str(len(a["body"]))
    assert a["createdAt"] == "2024-05-01" and a["api_version"] == "2"
    assert a["items"] == [{"id": 1}, {"id": 2}] and "password" not in a
    assert r.headers.get("etag") is None and r.headers.get("x-powered-by") is None
    assert r.headers.get("content-length") == str(len(r.body))

    r = await simple_request("GET", base + "/legacy/gone")
    assert r.status == 410
