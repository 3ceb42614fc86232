"""Aggregate routes against three real upstreams (catalog, reviews, stock)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from portway.config.loader import ConfigError, load_config_text
from portway.http.models import Request, Response
from tests.helpers import UpstreamHandle, http_get, run_gateway, run_upstream

PRODUCT = {"id": "7", "sku": "SKU-7", "name": "Lamp", "secret": "x", "price": {"eur": 10}}
REVIEWS = {"items": [{"by": "ann", "stars": 5, "email": "a@x"}], "average": 5, "internal": 1}


def agg_config(urls: dict[str, str], calls: list[dict[str, Any]], **agg: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            n: {"targets": [{"url": u}], "retries": {"attempts": 1}} for n, u in urls.items()
        },
        "routes": [
            {
                "name": "product-page",
                "match": {"paths": ["/pages/product/{id}"], "methods": ["GET"]},
                "aggregate": {"timeout": agg.pop("timeout", "5s"), "calls": calls, **agg},
            }
        ],
    }


CALLS: list[dict[str, Any]] = [
    {"name": "product", "upstream": "catalog", "path": "/products/{params.id}", "required": True},
    {
        "name": "reviews",
        "upstream": "reviews",
        "path": "/reviews?product={params.id}",
        "fields": {"allow": ["items", "average"]},
    },
    {"name": "inventory", "upstream": "stock", "path": "/stock/{params.id}"},
]


def json_handler(doc: Any) -> Any:
    async def h(req: Request) -> Response:
        return Response.json(200, doc)

    return h


@asynccontextmanager
async def three(handlers: dict[str, Any]) -> AsyncIterator[dict[str, UpstreamHandle]]:
    async with AsyncExitStack() as stack:
        ups = {n: await stack.enter_async_context(run_upstream(h)) for n, h in handlers.items()}
        yield ups


async def test_independent_calls_are_in_flight_together() -> None:
    # each upstream holds its answer until all three calls have arrived: sequential calls
    # would never get there (and the first one would time out)
    arrived = 0
    all_in = asyncio.Event()
    peak = 0

    def gated(doc: Any) -> Any:
        async def h(req: Request) -> Response:
            nonlocal arrived, peak
            arrived += 1
            peak = max(peak, arrived)
            if arrived == 3:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), 10)
            return Response.json(200, doc)

        return h

    handlers = {"catalog": gated(PRODUCT), "reviews": gated(REVIEWS), "stock": gated({"n": 3})}
    async with three(handlers) as ups:
        cfg = agg_config({n: u.url for n, u in ups.items()}, CALLS, timeout="15s")
        async with run_gateway(cfg) as gw:
            status, headers, body = await http_get(gw.url + "/pages/product/7", timeout=20)
    assert status == 200, body
    assert peak == 3
    doc = json.loads(body)
    assert doc["product"]["sku"] == "SKU-7"
    assert doc["reviews"] == {"items": REVIEWS["items"], "average": 5}  # allow filter
    assert doc["inventory"] == {"n": 3}
    assert headers.get("x-portway-partial") is None
    assert ups["reviews"].requests[0].path == "/reviews"
    assert ups["reviews"].requests[0].query == b"product=7"


async def test_a_call_using_an_earlier_result_waits_for_exactly_it() -> None:
    events: list[str] = []
    release_product = asyncio.Event()

    async def catalog(req: Request) -> Response:
        events.append("product:start")
        await asyncio.wait_for(release_product.wait(), 10)
        events.append("product:answer")
        return Response.json(200, PRODUCT)

    async def reviews(req: Request) -> Response:
        # independent of product: runs while product is still held
        events.append("reviews:start")
        release_product.set()
        return Response.json(200, REVIEWS)

    async def stock(req: Request) -> Response:
        events.append("stock:start " + req.path)
        return Response.json(200, {"n": 1})

    calls = [dict(c) for c in CALLS]
    calls[2]["path"] = "/stock/{product.sku}"
    async with three({"catalog": catalog, "reviews": reviews, "stock": stock}) as ups:
        async with run_gateway(agg_config({n: u.url for n, u in ups.items()}, calls)) as gw:
            status, _, body = await http_get(gw.url + "/pages/product/7")
    assert status == 200, body
    assert events.index("reviews:start") < events.index("product:answer")
    assert events.index("product:answer") < events.index("stock:start /stock/SKU-7")


async def test_killed_optional_backend_gives_a_partial_answer() -> None:
    handlers = {"catalog": json_handler(PRODUCT), "reviews": json_handler(REVIEWS)}
    handlers["stock"] = json_handler({"n": 1})
    async with three(handlers) as ups:
        await ups["stock"].stop()
        cfg = agg_config({n: u.url for n, u in ups.items()}, CALLS)
        async with run_gateway(cfg) as gw:
            status, headers, body = await http_get(gw.url + "/pages/product/7")
    assert status == 200
    assert headers.get("x-portway-partial") == "true"
    doc = json.loads(body)
    assert set(doc) == {"product", "reviews", "_errors"}
    assert "connect" in doc["_errors"]["inventory"]


async def test_killed_required_backend_answers_502_naming_it() -> None:
    handlers = {"catalog": json_handler(PRODUCT), "reviews": json_handler(REVIEWS)}
    handlers["stock"] = json_handler({"n": 1})
    async with three(handlers) as ups:
        await ups["catalog"].stop()
        cfg = agg_config({n: u.url for n, u in ups.items()}, CALLS)
        async with run_gateway(cfg) as gw:
            status, headers, body = await http_get(gw.url + "/pages/product/7")
    assert status == 502
    doc = json.loads(body)
    assert doc["call"] == "product"
    assert doc["code"] == "aggregate_call_failed"
    assert "'product'" in doc["error"]
    assert headers.get("content-type") == "application/json"


async def test_hung_backend_honours_the_call_timeout() -> None:
    never = asyncio.Event()
    got = asyncio.Event()

    async def hung(req: Request) -> Response:
        got.set()
        await never.wait()
        return Response.json(200, {})

    handlers = {"catalog": json_handler(PRODUCT), "reviews": hung, "stock": json_handler({"n": 1})}
    calls = [dict(c) for c in CALLS]
    calls[1]["timeout"] = "200ms"
    async with three(handlers) as ups:
        cfg = agg_config({n: u.url for n, u in ups.items()}, calls, timeout="20s")
        async with run_gateway(cfg) as gw:
            status, headers, body = await http_get(gw.url + "/pages/product/7", timeout=15)
        never.set()
    assert got.is_set()
    assert status == 200
    assert headers.get("x-portway-partial") == "true"
    doc = json.loads(body)
    assert doc["_errors"]["reviews"].startswith("timeout")
    assert doc["inventory"] == {"n": 1}


async def test_hung_required_backend_answers_504() -> None:
    never = asyncio.Event()

    async def hung(req: Request) -> Response:
        await never.wait()
        return Response.json(200, {})

    handlers = {"catalog": hung, "reviews": json_handler(REVIEWS), "stock": json_handler({})}
    calls = [dict(c) for c in CALLS]
    calls[0]["timeout"] = "200ms"
    async with three(handlers) as ups:
        cfg = agg_config({n: u.url for n, u in ups.items()}, calls, timeout="20s")
        async with run_gateway(cfg) as gw:
            status, _, body = await http_get(gw.url + "/pages/product/7", timeout=15)
        never.set()
    assert status == 504
    assert json.loads(body)["call"] == "product"


async def test_field_filters_target_group_rename_and_flat_merge() -> None:
    async def text(req: Request) -> Response:
        return Response.text(200, "not json")

    handlers = {"catalog": json_handler(PRODUCT), "reviews": json_handler(REVIEWS), "stock": text}
    calls: list[dict[str, Any]] = [
        {
            "name": "product",
            "upstream": "catalog",
            "path": "/products/{params.id}",
            "fields": {"deny": ["secret"], "rename": {"name": "title"}},
        },
        {
            "name": "reviews",
            "upstream": "reviews",
            "path": "/r",
            "target": "items",
            "fields": {"deny": ["[*].email"]},
            "group": "reviews",
        },
        {"name": "inventory", "upstream": "stock", "path": "/s"},
    ]
    async with three(handlers) as ups:
        cfg = agg_config({n: u.url for n, u in ups.items()}, calls, merge="flat")
        cfg["routes"][0]["aggregate"]["on_partial"] = {"status": 206, "header": "x-partial"}
        async with run_gateway(cfg) as gw:
            status, headers, body = await http_get(gw.url + "/pages/product/7")
    assert status == 206
    assert headers.get("x-partial") == "true"
    doc = json.loads(body)
    assert doc["title"] == "Lamp" and "name" not in doc and "secret" not in doc
    assert doc["reviews"] == [{"by": "ann", "stars": 5}]
    assert doc["_errors"]["inventory"].startswith("non-JSON response")


async def test_identity_and_trace_headers_reach_every_call() -> None:
    handlers = {"catalog": json_handler(PRODUCT), "reviews": json_handler(REVIEWS)}
    handlers["stock"] = json_handler({})
    async with three(handlers) as ups:
        cfg = agg_config({n: u.url for n, u in ups.items()}, CALLS)
        cfg["plugins"] = [{"name": "request_id"}]
        async with run_gateway(cfg) as gw:
            tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            status, headers, _ = await http_get(
                gw.url + "/pages/product/7",
                headers=[("traceparent", tp), ("accept-encoding", "gzip"), ("x-user", "u1")],
            )
    assert status == 200
    rid = headers.get("x-request-id")
    assert rid
    for up in ups.values():
        (req,) = up.requests
        h = req.headers
        assert h.get("x-request-id") == rid
        assert h.get("traceparent") == tp
        assert h.get("x-user") == "u1"
        assert h.get("x-forwarded-for") == "127.0.0.1"
        assert h.get("accept-encoding") is None


async def test_oversized_call_response_is_an_error_not_a_crash() -> None:
    async def big(req: Request) -> Response:
        return Response.json(200, {"blob": "x" * 5000})

    handlers = {"catalog": json_handler(PRODUCT), "reviews": big, "stock": json_handler({})}
    async with three(handlers) as ups:
        cfg = agg_config({n: u.url for n, u in ups.items()}, CALLS)
        cfg["routes"][0]["max_body_bytes"] = 1024
        async with run_gateway(cfg) as gw:
            status, _, body = await http_get(gw.url + "/pages/product/7")
    assert status == 200
    assert "larger than 1024 bytes" in json.loads(body)["_errors"]["reviews"]


def _load_error(calls: list[dict[str, Any]]) -> str:
    import yaml

    cfg = agg_config({"catalog": "http://127.0.0.1:1", "stock": "http://127.0.0.1:2"}, calls)
    with pytest.raises(ConfigError) as e:
        load_config_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(e.value)


def test_cycles_and_unknown_references_are_rejected_at_load_with_their_line() -> None:
    cycle = [
        {"name": "a", "upstream": "catalog", "path": "/a/{b.id}"},
        {"name": "b", "upstream": "stock", "path": "/b/{a.id}"},
    ]
    msg = _load_error(cycle)
    assert "cycle: a -> b -> a" in msg
    assert "routes[0].aggregate.calls[0].path" in msg and "line" in msg
    unknown = [{"name": "a", "upstream": "catalog", "path": "/a/{nope.id}"}]
    assert "unknown call 'nope'" in _load_error(unknown)
    bad_up = [{"name": "a", "upstream": "catalgo", "path": "/a"}]
    assert "did you mean 'catalog'" in _load_error(bad_up)
    bad_path = [{"name": "a", "upstream": "catalog", "path": "/a", "fields": {"deny": ["x[?]"]}}]
    assert "routes[0].aggregate.calls[0].fields.deny[0]" in _load_error(bad_path)


async def test_route_plugins_run_once_and_auth_identity_reaches_the_calls() -> None:
    handlers = {"catalog": json_handler(PRODUCT), "reviews": json_handler(REVIEWS)}
    handlers["stock"] = json_handler({})
    async with three(handlers) as ups:
        cfg = agg_config({n: u.url for n, u in ups.items()}, CALLS)
        cfg["consumers"] = [{"username": "ann", "credentials": {"key_auth": [{"key": "k1"}]}}]
        cfg["routes"][0]["plugins"] = [
            {"name": "key_auth"},
            {"name": "rate_limit", "config": {"limits": [{"rate": 1, "per": "1h"}]}},
        ]
        async with run_gateway(cfg) as gw:
            url = gw.url + "/pages/product/7"
            anon = await http_get(url)
            first = await http_get(url, headers=[("apikey", "k1")])
            second = await http_get(url, headers=[("apikey", "k1")])
    assert anon[0] == 401
    assert first[0] == 200
    # one rate-limit unit per client request (three calls did not spend three)
    assert first[1].get("ratelimit-policy") or first[1].get("x-ratelimit-limit")
    assert second[0] == 429
    for up in ups.values():
        (req,) = up.requests  # the 401 and the 429 made no call
        assert req.headers.get("x-consumer-username") == "ann"
        assert req.headers.get("apikey") is None  # hidden by key_auth, as when proxying


async def test_a_dependant_of_a_failed_optional_call_is_not_run() -> None:
    handlers = {"catalog": json_handler(PRODUCT), "reviews": json_handler(REVIEWS)}
    handlers["stock"] = json_handler({})
    calls = [dict(c) for c in CALLS]
    calls[0]["required"] = False
    calls[2]["path"] = "/stock/{product.sku}"
    async with three(handlers) as ups:
        await ups["catalog"].stop()
        async with run_gateway(agg_config({n: u.url for n, u in ups.items()}, calls)) as gw:
            status, headers, body = await http_get(gw.url + "/pages/product/7")
    assert status == 200 and headers.get("x-portway-partial") == "true"
    doc = json.loads(body)
    assert doc["_errors"]["inventory"] == "not run: call 'product' failed"
    assert "product" in doc["_errors"] and doc["reviews"]["average"] == 5
    assert ups["stock"].requests == []


async def test_missing_result_value_and_non_2xx_are_call_errors() -> None:
    async def missing(req: Request) -> Response:
        return Response.json(404, {"error": "nope"})

    handlers = {"catalog": json_handler({"id": 1}), "reviews": missing}
    handlers["stock"] = json_handler({})
    calls = [dict(c) for c in CALLS]
    calls[2]["path"] = "/stock/{product.sku}"
    async with three(handlers) as ups:
        async with run_gateway(agg_config({n: u.url for n, u in ups.items()}, calls)) as gw:
            status, _, body = await http_get(gw.url + "/pages/product/7")
    assert status == 200
    errors = json.loads(body)["_errors"]
    assert errors == {
        "reviews": "upstream answered 404",
        "inventory": "{product.sku}: not found in the result of 'product'",
    }


async def test_cache_on_an_aggregate_route_stores_whole_answers_not_partial_ones() -> None:
    async def stock(req: Request) -> Response:
        # product 8's stock call fails: its answers are partial
        return Response.json(500 if req.path.endswith("/8") else 200, {"n": 1})

    handlers = {"catalog": json_handler(PRODUCT), "reviews": json_handler(REVIEWS)}
    handlers["stock"] = stock
    async with three(handlers) as ups:
        cfg = agg_config({n: u.url for n, u in ups.items()}, CALLS)
        cfg["routes"][0]["plugins"] = [{"name": "cache", "config": {"default_ttl": "1h"}}]
        async with run_gateway(cfg) as gw:
            first = await http_get(gw.url + "/pages/product/7")
            second = await http_get(gw.url + "/pages/product/7")
            partial = [await http_get(gw.url + "/pages/product/8") for _ in range(2)]
    assert first[0] == second[0] == 200 and first[2] == second[2]
    assert second[1].get("x-cache") == "HIT"
    paths = [r.path for r in ups["catalog"].requests]
    assert paths == ["/products/7", "/products/8", "/products/8"]  # 7 once; 8 never stored
    assert [p[1].get("x-portway-partial") for p in partial] == ["true", "true"]
    assert partial[0][1].get("cache-control") == "no-store"


async def test_the_aggregate_timeout_bounds_calls_without_their_own() -> None:
    never = asyncio.Event()

    async def hung(req: Request) -> Response:
        await never.wait()
        return Response.json(200, {})

    handlers = {"catalog": json_handler(PRODUCT), "reviews": json_handler(REVIEWS), "stock": hung}
    async with three(handlers) as ups:
        calls = [{**c, "required": False} for c in CALLS]  # only the hung call is asserted on
        cfg = agg_config({n: u.url for n, u in ups.items()}, calls, timeout="1s")
        async with run_gateway(cfg) as gw:
            status, headers, body = await http_get(gw.url + "/pages/product/7", timeout=15)
        never.set()
    assert status == 200 and headers.get("x-portway-partial") == "true"
    doc = json.loads(body)
    # the call's deadline is the aggregate's: whichever fires first names it a timeout
    assert "timeout" in doc["_errors"]["inventory"]
