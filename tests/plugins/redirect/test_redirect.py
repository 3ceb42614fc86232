"""``redirect`` through a real gateway: http→https and URL templates, routes without upstream."""

from __future__ import annotations

import orjson
import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.client import simple_request
from tests.helpers import assert_plugin_config_error, run_gateway, run_upstream


async def test_https_redirect_keeps_host_path_and_query() -> None:
    async with run_upstream() as up:
        cfg = {
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            "upstreams": {"u": {"targets": [{"url": up.url}]}},
            "routes": [
                {
                    "name": "r",
                    "match": {"paths": ["/"]},
                    "upstream": "u",
                    "plugins": [{"name": "redirect", "config": {"https": True, "status": 308}}],
                }
            ],
        }
        async with run_gateway(cfg) as gw:
            r = await simple_request(
                "POST",
                gw.url + "/a/b%20c/./d?x=1&y=%2F",
                headers=[("host", "shop.example.com:8080")],
                body=b"payload",
            )
            # a trusted proxy terminated TLS and says so: the request goes through
            behind_tls = await simple_request(
                "GET", gw.url + "/ok", headers=[("x-forwarded-proto", "https")]
            )
        assert [q.path for q in up.requests] == ["/ok"]
    assert r.status == 308
    assert r.headers.get("location") == "https://shop.example.com/a/b%20c/d?x=1&y=%2F"
    assert orjson.loads(r.body) == {"redirect": r.headers.get("location")}
    assert behind_tls.status == 200


async def test_untrusted_forwarded_proto_is_ignored_and_https_port() -> None:
    cfg = {
        "upstreams": {"u": {"targets": [{"url": "http://127.0.0.1:9"}]}},
        "routes": [
            {
                "name": "r",
                "match": {"paths": ["/"]},
                "upstream": "u",
                "plugins": [{"name": "redirect", "config": {"https": True, "https_port": 8443}}],
            }
        ],
    }
    async with run_gateway(cfg) as gw:
        r = await simple_request(
            "GET", gw.url + "/p", headers=[("x-forwarded-proto", "https"), ("host", "h.test")]
        )
    assert r.status == 308 and r.headers.get("location") == "https://h.test:8443/p"


async def test_to_template_without_upstream() -> None:
    cfg = {
        "routes": [
            {
                "name": "moved",
                "match": {"paths": ["/old"]},
                "plugins": [
                    {
                        "name": "redirect",
                        "config": {"to": "https://new.example.com{path}", "status": 301},
                    }
                ],
            },
            {
                "name": "user",
                "match": {"paths": ["/users/{id}"]},
                "plugins": [
                    {
                        "name": "redirect",
                        "config": {
                            "to": "https://{host}/v2/people/{params.id}?{query}",
                            "status": 302,
                        },
                    }
                ],
            },
        ]
    }
    async with run_gateway(cfg) as gw:
        a = await simple_request("GET", gw.url + "/old/x?q=1")
        b = await simple_request("GET", gw.url + "/users/a%20b", headers=[("host", "api.test")])
        c = await simple_request("GET", gw.url + "/users/7?z=9", headers=[("host", "api.test")])
    assert (a.status, a.headers.get("location")) == (301, "https://new.example.com/old/x?q=1")
    assert (b.status, b.headers.get("location")) == (302, "https://api.test/v2/people/a%20b")
    assert c.headers.get("location") == "https://api.test/v2/people/7?z=9"


@pytest.mark.parametrize(
    "cfg, where, message",
    [
        ("{https: true, status: 305}", "status", "301"),
        ("{to: 'https://x{nope}'}", "to", "unknown placeholder"),
        ("{https: true, to: 'https://x'}", "config", "exactly one"),
        ("{}", "config", "exactly one"),
        ("{to: 'https://exämple.com{path}'}", "to", "ASCII"),
    ],
)
def test_bad_config_rejected_with_path_and_line(cfg: str, where: str, message: str) -> None:
    assert_plugin_config_error("redirect", cfg, where, message)


def test_https_redirect_route_still_needs_an_upstream() -> None:
    text = "routes:\n  - name: r\n    plugins: [{name: redirect, config: {https: true}}]\n"
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "c.yaml")
    assert any(e.path == "routes[0].upstream" for e in ei.value.errors), ei.value.errors
