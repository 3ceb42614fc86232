"""graphql plugin end to end: a real gateway in front of a real upstream."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest

from portway.config.loader import ConfigError, load_config_text
from portway.http.client import simple_request
from portway.http.models import Request, Response
from portway.observability.metrics import Metrics
from tests.helpers import GatewayHandle, UpstreamHandle, run_gateway, run_upstream

PRODUCTS = "query Products { products(first: 2) { id name } }"


async def answer(req: Request) -> Response:
    body = await req.body.read_all() if req.body is not None else b""
    return Response.json(200, {"data": {"echo": body.decode()}})


@asynccontextmanager
async def gateway(
    gql: dict[str, Any], extra_plugins: list[dict[str, Any]] | None = None
) -> AsyncIterator[tuple[GatewayHandle, UpstreamHandle]]:
    async with run_upstream(answer) as up:
        cfg = {
            "upstreams": {"api": {"targets": [{"url": up.url}]}},
            "routes": [
                {
                    "name": "graphql",
                    "match": {"paths": ["=/graphql"]},
                    "upstream": "api",
                    "plugins": [{"name": "graphql", "config": gql}, *(extra_plugins or [])],
                }
            ],
        }
        async with run_gateway(cfg) as gw:
            yield gw, up


async def post(gw: GatewayHandle, payload: Any) -> tuple[int, Any]:
    r = await simple_request(
        "POST",
        gw.url + "/graphql",
        headers=[("content-type", "application/json")],
        body=json.dumps(payload).encode(),
    )
    return r.status, json.loads(r.body)


def nested(depth: int) -> str:
    q = "id"
    for i in range(depth):
        q = f"f{i} {{ {q} }}"
    return "{ " + q + " }"


async def test_depth_bomb_is_refused_before_the_upstream() -> None:
    async with gateway({"max_depth": 5}) as (gw, up):
        ok_status, _ = await post(gw, {"query": nested(4)})
        status, body = await post(gw, {"query": nested(200)})
        # the same bomb hidden in fragments
        frags = "query Q { ...F0 } " + " ".join(
            f"fragment F{i} on T {{ a {{ ...F{i + 1} }} }}" for i in range(20)
        )
        frags += " fragment F20 on T { id }"
        status2, body2 = await post(gw, {"query": frags})
        # deeper than the (recursive) parser's stack: refused the same way, never a 500
        deep = "{" + "a{" * 3000 + "b" + "}" * 3001
        status3, body3 = await post(gw, {"query": deep})
    assert status3 == 400 and body3["errors"][0]["extensions"]["code"] == "DEPTH_LIMIT"
    assert ok_status == 200
    assert status == 400
    assert body["errors"][0]["extensions"]["code"] == "DEPTH_LIMIT"
    assert "exceeds the maximum of 5" in body["errors"][0]["message"]
    assert status2 == 400 and body2["errors"][0]["extensions"]["code"] == "DEPTH_LIMIT"
    assert len(up.requests) == 1


async def test_alias_bomb_is_refused_even_through_fragment_fanout() -> None:
    async with gateway({"max_aliases": 10}) as (gw, up):
        flat = "{ " + " ".join(f"a{i}: products {{ id }}" for i in range(50)) + " }"
        s1, b1 = await post(gw, {"query": flat})
        # 2 aliases per fragment, each fragment spread twice by the previous one: 2^21 aliases
        # in the expanded operation, measured without expanding it
        chain = "query Q { ...F0 } " + " ".join(
            f"fragment F{i} on T {{ x: a {{ ...F{i + 1} }} y: a {{ ...F{i + 1} }} }}"
            for i in range(20)
        )
        chain += " fragment F20 on T { id }"
        s2, b2 = await post(gw, {"query": chain})
    assert s1 == 400 and b1["errors"][0]["extensions"]["code"] == "ALIAS_LIMIT"
    assert s2 == 400 and b2["errors"][0]["extensions"]["code"] in ("ALIAS_LIMIT", "DEPTH_LIMIT")
    assert up.requests == []


async def test_cost_with_list_multipliers_and_weights() -> None:
    cfg = {"max_cost": 100, "field_weights": {"search": 10}, "max_depth": 20}
    async with gateway(cfg) as (gw, _):
        cheap = await post(gw, {"query": "{ products(first: 5) { id name } }"})  # 1 + 5*2
        costly = await post(
            gw,
            {
                "query": "query($n: Int) { products(first: $n) { reviews(first: 10) { id } } }",
                "variables": {"n": 50},
            },
        )
        weighted = await post(
            gw, {"query": "{ " + " ".join(f"s{i}: search" for i in range(11)) + " }"}
        )
    assert cheap[0] == 200
    assert costly[0] == 400 and costly[1]["errors"][0]["extensions"]["code"] == "COST_LIMIT"
    assert "cost 551" in costly[1]["errors"][0]["message"]  # 1 + 50 * (1 + 10 * 1)
    assert weighted[0] == 400 and "cost 110" in weighted[1]["errors"][0]["message"]


async def test_persisted_only_mode_and_apq() -> None:
    digest = hashlib.sha256(PRODUCTS.encode()).hexdigest()
    async with gateway({"persisted": [PRODUCTS], "persisted_only": True}) as (gw, up):
        by_text = await post(gw, {"query": PRODUCTS})
        other = await post(gw, {"query": "{ users { id } }"})
        apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
        by_hash = await post(gw, {"extensions": apq, "operationName": "Products"})
        unknown = await post(gw, {"extensions": {"persistedQuery": {"sha256Hash": "0" * 64}}})
        mismatch = await post(gw, {"query": "{ users { id } }", "extensions": apq})
        r = await simple_request(
            "GET",
            gw.url + "/graphql?extensions=" + quote(json.dumps(apq)),
        )
    assert by_text[0] == 200
    assert other[0] == 400 and other[1]["errors"][0]["extensions"]["code"] == "NOT_ALLOWED"
    assert by_hash[0] == 200
    # the upstream received the document although the client sent only its hash
    sent = json.loads(by_hash[1]["data"]["echo"])
    assert sent["query"] == PRODUCTS
    assert unknown[0] == 400
    assert unknown[1]["errors"][0]["message"] == "PersistedQueryNotFound"
    assert mismatch[0] == 400
    assert r.status == 200
    assert len(up.requests) == 3


async def test_introspection_can_be_refused() -> None:
    async with gateway({"introspection": False}) as (gw, _):
        s, b = await post(gw, {"query": "{ __schema { types { name } } }"})
        s2, _ = await post(gw, {"query": "{ products { __typename id } }"})
    assert s == 400 and b["errors"][0]["extensions"]["code"] == "INTROSPECTION_DISABLED"
    assert s2 == 200


async def test_bad_requests_get_graphql_errors() -> None:
    async with gateway({}) as (gw, up):
        syntax = await post(gw, {"query": "{ products { id "})
        cycle = await post(
            gw, {"query": "{ ...A } fragment A on T { ...B } fragment B on T { ...A }"}
        )
        two = await post(gw, {"query": "query A { a } query B { b }"})
        not_json = await simple_request(
            "POST", gw.url + "/graphql", headers=[("content-type", "application/json")], body=b"{"
        )
        mutation_get = await simple_request(
            "GET", gw.url + "/graphql?query=" + quote("mutation { del }")
        )
    assert (
        syntax[0] == 400 and syntax[1]["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    )
    assert cycle[0] == 400 and "cycle" in cycle[1]["errors"][0]["message"]
    assert two[0] == 400 and "operationName" in two[1]["errors"][0]["message"]
    assert not_json.status == 400 and json.loads(not_json.body)["errors"]
    assert mutation_get.status == 405
    assert up.requests == []


async def test_rate_limit_per_operation() -> None:
    rl = {
        "name": "rate_limit",
        "config": {"key": ["graphql_operation"], "limits": [{"rate": 2, "per": "1h"}]},
    }
    async with gateway({}, [rl]) as (gw, _):
        metrics = next(o for o in gw.gateway.observers if isinstance(o, Metrics))
        before = dict(metrics.snapshot().graphql)  # the observer may outlive one gateway
        products = [await post(gw, {"query": PRODUCTS}) for _ in range(3)]
        users = await post(gw, {"query": "query Users { users { id } }"})
        after = metrics.snapshot().graphql
        ops = {k: n - before.get(k, 0) for k, n in after.items()}
    assert [s for s, _ in products] == [200, 200, 429]
    assert users[0] == 200  # another operation has its own bucket
    assert ops[("graphql", "Products", "2xx")] == 2
    assert ops[("graphql", "Products", "4xx")] == 1
    assert ops[("graphql", "Users", "2xx")] == 1


def test_bad_persisted_entries_are_rejected_at_load() -> None:
    text = """
upstreams: {api: {targets: [{url: "http://127.0.0.1:1"}]}}
routes:
  - name: g
    upstream: api
    plugins:
      - name: graphql
        config:
          persisted:
            "0000000000000000000000000000000000000000000000000000000000000000": "{ a }"
"""
    with pytest.raises(ConfigError) as e:
        load_config_text(text)
    assert "routes[0].plugins[0].config.persisted" in str(e.value)
    assert "not the sha256" in str(e.value)
