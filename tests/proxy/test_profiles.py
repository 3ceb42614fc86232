"""BFF profiles: the same path answered differently to web, mobile and partner clients."""

from __future__ import annotations

import json
from typing import Any

import pytest

from portway.config.loader import ConfigError, load_config_text
from portway.http.models import Request, Response
from portway.observability.metrics import Metrics
from tests.helpers import http_get, run_gateway, run_upstream


async def catalog(req: Request) -> Response:
    variant = req.headers.get("x-variant") or "full"
    return Response.json(
        200,
        {"variant": variant, "consumer": req.headers.get("x-consumer-username")},
    )


def config(url: str, route_profiles: list[str] | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"name": "products", "match": {"paths": ["/products"]}}
    route["upstream"] = "catalog"
    route["plugins"] = [{"name": "request_id"}]
    if route_profiles is not None:
        route["profiles"] = route_profiles
    return {
        "upstreams": {"catalog": {"targets": [{"url": url}]}},
        "consumers": [
            {"username": "acme", "credentials": {"key_auth": [{"key": "acme-key"}]}},
        ],
        "profiles": {
            "mobile": {
                "match": {"headers": {"x-client": "mobile"}},
                "plugins": [
                    {
                        "name": "headers",
                        "config": {
                            "request": {"set": {"x-variant": "compact"}},
                            "response": {"set": {"x-profile": "mobile"}},
                        },
                    }
                ],
            },
            "partner": {
                "match": {"hosts": ["partner.example.com"]},
                "plugins": [
                    {"name": "key_auth"},
                    {"name": "rate_limit", "config": {"limits": [{"rate": 2, "per": "1h"}]}},
                ],
            },
        },
        "routes": [route],
    }


async def test_same_path_answered_per_profile() -> None:
    async with run_upstream(catalog) as up:
        async with run_gateway(config(up.url)) as gw:
            metrics = next(o for o in gw.gateway.observers if isinstance(o, Metrics))
            before = dict(metrics.snapshot().profiles)  # the observer may outlive one gateway
            url = gw.url + "/products"
            web = await http_get(url)
            mobile = await http_get(url, headers=[("x-client", "mobile")])
            partner_anon = await http_get(url, headers=[("host", "partner.example.com")])
            partner = [
                await http_get(
                    url, headers=[("host", "partner.example.com"), ("apikey", "acme-key")]
                )
                for _ in range(3)
            ]
            after = metrics.snapshot().profiles
            profiles = {k: n - before.get(k, 0) for k, n in after.items()}
    # web: the route's own plugins only
    assert web[0] == 200 and json.loads(web[2]) == {"variant": "full", "consumer": None}
    assert web[1].get("x-request-id") and web[1].get("x-profile") is None
    # mobile: its headers binding edits the request and the response around the route's own
    assert mobile[0] == 200 and json.loads(mobile[2])["variant"] == "compact"
    assert mobile[1].get("x-profile") == "mobile" and mobile[1].get("x-request-id")
    # partner: key_auth then a per-profile rate limit
    assert partner_anon[0] == 401
    assert [p[0] for p in partner] == [200, 200, 429]
    assert json.loads(partner[0][2])["consumer"] == "acme"
    assert profiles[("products", "default", "2xx")] == 1
    assert profiles[("products", "mobile", "2xx")] == 1
    assert profiles[("products", "partner", "4xx")] == 2


async def test_a_routes_own_binding_wins_over_the_profiles() -> None:
    async with run_upstream(catalog) as up:
        cfg = config(up.url)
        cfg["routes"][0]["plugins"] = [
            {"name": "headers", "config": {"response": {"set": {"x-route": "1"}}}}
        ]
        async with run_gateway(cfg) as gw:
            s, h, body = await http_get(gw.url + "/products", headers=[("x-client", "mobile")])
    assert s == 200 and json.loads(body)["variant"] == "full"
    assert h.get("x-route") == "1" and h.get("x-profile") is None


async def test_route_limited_to_some_profiles_answers_404_to_others() -> None:
    async with run_upstream(catalog) as up:
        async with run_gateway(config(up.url, ["mobile", "default"])) as gw:
            url = gw.url + "/products"
            ok = await http_get(url)
            mobile = await http_get(url, headers=[("x-client", "mobile")])
            partner = await http_get(url, headers=[("host", "partner.example.com")])
    assert ok[0] == 200 and mobile[0] == 200
    assert partner[0] == 404
    assert json.loads(partner[2])["code"] == "profile_not_served"
    assert len(up.requests) == 2


def test_unknown_profile_on_a_route_is_rejected_at_load() -> None:
    import yaml

    cfg = config("http://127.0.0.1:1", ["mobil"])
    with pytest.raises(ConfigError) as e:
        load_config_text(yaml.safe_dump(cfg, sort_keys=False))
    assert "routes[0].profiles[0]" in str(e.value)
    assert "did you mean 'mobile'" in str(e.value)


async def test_profile_selected_by_listener() -> None:
    from tests.helpers import free_port

    internal = free_port()
    async with run_upstream(catalog) as up:
        cfg = config(up.url)
        cfg["listeners"] = [
            {"name": "public"},
            {"name": "internal", "address": f"127.0.0.1:{internal}"},
        ]
        cfg["profiles"] = {
            "ops": {
                "match": {"listeners": ["internal"]},
                "plugins": [{"name": "headers", "config": {"response": {"set": {"x-ops": "1"}}}}],
            }
        }
        async with run_gateway(cfg) as gw:
            public = await http_get(gw.url + "/products")
            ops = await http_get(f"http://127.0.0.1:{internal}/products")
    assert public[0] == ops[0] == 200
    assert public[1].get("x-ops") is None and ops[1].get("x-ops") == "1"
