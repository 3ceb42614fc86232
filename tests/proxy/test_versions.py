"""Route-level ``versions``: the version from each source picks the upstream; unknown ones
are refused with the known list; deprecated ones carry Deprecation / Sunset / Link."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.helpers import run_gateway, run_upstream
from tests.proxy.keepalive import KeepAlive, named


def versions_cfg(v1: str, v2: str, source: str, **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "orders-v1": {"targets": [{"url": v1}]},
            "orders-v2": {"targets": [{"url": v2}]},
        },
        "routes": [
            {
                "name": "orders",
                "match": {"paths": ["/orders", "/v1/orders", "/v2/orders", "/v9/orders"]},
                "upstream": "orders-v2",
                "versions": {
                    "from": source,
                    "default": "2",
                    "map": {
                        "1": {
                            "upstream": "orders-v1",
                            "deprecated": True,
                            "sunset": "2027-06-30",
                            **extra,
                        },
                        "2": {"upstream": "orders-v2"},
                    },
                },
            }
        ],
    }


CASES = [
    ("header:api-version", ("/orders", {"api-version": "1"}), ("/orders", {"api-version": "2"})),
    ("query:version", ("/orders?version=1", {}), ("/orders?version=v2", {})),
    ("path", ("/v1/orders", {}), ("/v2/orders", {})),
    (
        "accept",
        ("/orders", {"accept": "application/vnd.shop.v1+json"}),
        ("/orders", {"accept": "text/html, application/vnd.shop.v2+json;q=0.9"}),
    ),
]


@pytest.mark.parametrize(("source", "one", "two"), CASES, ids=[c[0] for c in CASES])
async def test_version_from_each_source(source: str, one: Any, two: Any) -> None:
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        async with run_gateway(versions_cfg(a.url, b.url, source)) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                for _ in range(3):
                    status, h, _ = await c.get(*one)
                    assert (status, h["x-backend"]) == (200, "v1")
                    assert h["deprecation"] == "@0"
                    assert h["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
                    assert "link" not in h
                    status, h, _ = await c.get(*two)
                    assert (status, h["x-backend"]) == (200, "v2")
                    assert "deprecation" not in h and "sunset" not in h
                # no version named: the default
                status, h, _ = await c.get("/orders")
                assert (status, h["x-backend"]) == (200, "v2")
            finally:
                await c.aclose()


async def test_unknown_version_is_400_listing_the_known_ones() -> None:
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        for source, path, headers in (
            ("header:api-version", "/orders", {"api-version": "9"}),
            ("path", "/v9/orders", {}),
        ):
            async with run_gateway(versions_cfg(a.url, b.url, source)) as gw:
                c = await KeepAlive.open(gw.port)
                try:
                    status, h, body = await c.get(path, headers)
                    assert status == 400 and h["content-type"] == "application/json"
                    doc = orjson.loads(body)
                    assert doc["code"] == "unknown_version" and doc["versions"] == ["1", "2"]
                    assert "'9'" in doc["error"]
                    # the connection stays usable
                    assert (await c.get("/orders"))[0] == 200
                finally:
                    await c.aclose()
        assert not a.requests or all(r.path != "/v9/orders" for r in a.requests)


async def test_deprecation_date_and_link() -> None:
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        cfg = versions_cfg(
            a.url, b.url, "header:api-version", link="https://docs.example.com/migrate-v2"
        )
        cfg["routes"][0]["versions"]["map"]["1"]["deprecated"] = "2026-01-01"
        async with run_gateway(cfg) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                status, h, _ = await c.get("/orders", {"api-version": "1"})
                assert status == 200
                assert h["deprecation"] == "@1767225600"  # RFC 9745: @epoch seconds
                assert h["link"] == (
                    '<https://docs.example.com/migrate-v2>; rel="deprecation"; type="text/html", '
                    '<https://docs.example.com/migrate-v2>; rel="sunset"; type="text/html"'
                )
            finally:
                await c.aclose()


async def test_current_versions_stay_on_the_task_free_path() -> None:
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        async with run_gateway(versions_cfg(a.url, b.url, "header:api-version")) as gw:
            app = gw.worker.app
            assert app is not None
            c = await KeepAlive.open(gw.port)
            try:
                await c.get("/orders", {"api-version": "2"})  # opens the pooled connection
                before = app.fast_requests
                for _ in range(10):
                    assert (await c.get("/orders", {"api-version": "2"}))[1]["x-backend"] == "v2"
                assert app.fast_requests == before + 10
            finally:
                await c.aclose()
