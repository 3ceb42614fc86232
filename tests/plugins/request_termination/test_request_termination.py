"""``request_termination`` through a real gateway."""

from __future__ import annotations

import orjson
import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from tests.helpers import http_get, run_gateway, run_upstream, simple_config


async def test_default_json_body_and_custom_body() -> None:
    async with run_upstream() as up:
        cfg = simple_config(
            up.url,
            plugins=[
                {"name": "request_id"},
                {"name": "request_termination", "config": {"message": "down for maintenance"}},
            ],
        )
        cfg["routes"].append(
            {
                "name": "teapot",
                "match": {"paths": ["=/tea"]},
                "plugins": [
                    {
                        "name": "request_termination",
                        "config": {
                            "status": 418,
                            "body": "short & stout",
                            "content_type": "text/plain",
                        },
                    }
                ],
            }
        )
        async with run_gateway(cfg) as gw:
            s1, h1, b1 = await http_get(gw.url + "/x", headers=[("x-request-id", "rid-1")])
            s2, h2, b2 = await http_get(gw.url + "/tea")
        assert up.requests == []  # nothing reached the upstream
    assert s1 == 503 and h1.get("content-type") == "application/json"
    assert orjson.loads(b1) == {
        "error": "down for maintenance",
        "code": "terminated",
        "status": 503,
        "request_id": "rid-1",
    }
    assert h1.get("content-length") == str(len(b1))
    assert (s2, b2, h2.get("content-type")) == (418, b"short & stout", "text/plain")


async def test_no_body_status_has_no_body() -> None:
    cfg = {
        "routes": [
            {
                "name": "r",
                "match": {"paths": ["/"]},
                "plugins": [{"name": "request_termination", "config": {"status": 204, "body": ""}}],
            }
        ]
    }
    async with run_gateway(cfg) as gw:
        s, h, b = await http_get(gw.url + "/x")
    assert s == 204 and b == b"" and h.get("content-length") is None


@pytest.mark.parametrize(
    "config, where",
    [
        ("{status: 99}", "status"),
        ("{status: 101}", "status"),
        ("{status: 600}", "status"),
        ('{content_type: "text/plain\\r\\nx: y"}', "content_type"),
        ("{stauts: 503}", "stauts"),
    ],
)
def test_bad_config_rejected_at_load(config: str, where: str) -> None:
    text = f"routes: [{{name: r, match: {{paths: ['/']}}, plugins: [{{name: request_termination, config: {config}}}]}}]\n"
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "c.yaml")
    assert any(where in str(e) for e in ei.value.errors), ei.value.errors
