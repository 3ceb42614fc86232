"""Route-level ``split``: exact weighted shares, force rules, sticky variants, visibility."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from prometheus_client import REGISTRY

from portway.config.traffic import SplitConfig
from portway.proxy.split import Arm, Splitter, bucket_of
from tests.helpers import run_gateway, run_upstream
from tests.proxy.keepalive import KeepAlive, named


async def wait_lines(path: Any, n: int) -> list[dict[str, Any]]:
    """The access log's lines once there are ``n`` (a writer thread flushes them)."""
    for _ in range(500):
        raw = path.read_bytes().splitlines() if path.exists() else []
        if len(raw) >= n:
            return [json.loads(x) for x in raw]
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} access log lines")


def split_cfg(v1: str, v2: str, route: str = "checkout", **split: Any) -> dict[str, Any]:
    return {
        "upstreams": {"v1": {"targets": [{"url": v1}]}, "v2": {"targets": [{"url": v2}]}},
        "routes": [
            {
                "name": route,
                "match": {"paths": ["/checkout"]},
                "upstream": "v1",
                "split": {"to": [{"upstream": "v2", "percent": split.pop("percent", 5)}], **split},
            }
        ],
    }


async def count_backends(port: int, n: int, conns: int = 8, headers: Any = None) -> Counter[str]:
    seen: Counter[str] = Counter()
    per = n // conns

    async def one() -> None:
        c = await KeepAlive.open(port)
        try:
            for _ in range(per):
                status, h, _ = await c.get("/checkout", headers)
                assert status == 200
                seen[h["x-backend"]] += 1
        finally:
            await c.aclose()

    await asyncio.gather(*(one() for _ in range(conns)))
    return seen


async def test_10000_requests_at_5_percent_are_exact() -> None:
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        async with run_gateway(split_cfg(a.url, b.url)) as gw:
            app = gw.worker.app
            assert app is not None
            seen = await count_backends(gw.port, 10_000)
            # the choice is synchronous: split routes keep the task-free path
            assert app.fast_requests >= 9_000
            # swrr is exact over every full cycle (20 requests at 5 %), whatever the interleaving
            # of the 8 connections: not merely within ±0.5 %
            assert seen == {"v2": 500, "v1": 9500}
            first = await count_backends(gw.port, 2_000)
            assert first == {"v2": 100, "v1": 1900}


def _splitter(percents: list[float], sticky: str | None = None) -> Splitter:
    cfg = SplitConfig.model_validate(
        {"to": [{"upstream": f"c{i}", "percent": p} for i, p in enumerate(percents)]}
        | ({"sticky": sticky} if sticky else {})
    )
    return Splitter(cfg, Arm("primary", None, 0), lambda name: None)  # type: ignore[arg-type,return-value]


def test_swrr_counts_are_within_one_of_the_share_at_every_prefix() -> None:
    s = _splitter([5, 12.5, 0.01])
    counts: Counter[str] = Counter()
    for n in range(1, 20_001):
        counts[s.next_arm().name] += 1
        for arm in s.arms:
            assert abs(counts[arm.name] - n * arm.weight / 10_000) <= 1
    assert counts == {"c0": 1000, "c1": 2500, "c2": 2, "primary": 16498}


def test_sticky_buckets_only_move_clients_onto_a_growing_variant() -> None:
    keys = [f"client-{i}".encode() for i in range(5000)]
    before = {k: _splitter([5]).by_bucket(bucket_of(k)).name for k in keys}
    after = {k: _splitter([50]).by_bucket(bucket_of(k)).name for k in keys}
    assert all(after[k] == "c0" for k in keys if before[k] == "c0")
    share = sum(1 for v in after.values() if v == "c0") / len(keys)
    assert 0.47 < share < 0.53
    # the hash is BLAKE2b: the same bucket on every instance and Python process
    assert (
        bucket_of(b"abc")
        == int.from_bytes(__import__("hashlib").blake2b(b"abc", digest_size=8).digest(), "big")
        % 10_000
    )


async def test_force_header_overrides_the_weights() -> None:
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        cfg = split_cfg(
            a.url,
            b.url,
            percent=0,
            force=[{"when": {"headers": {"x-canary": "1"}}, "upstream": "v2"}],
        )
        async with run_gateway(cfg) as gw:
            assert await count_backends(gw.port, 40, conns=2, headers={"x-canary": "1"}) == {
                "v2": 40
            }
            assert await count_backends(gw.port, 40, conns=2, headers={"x-canary": "0"}) == {
                "v1": 40
            }


async def test_sticky_cookie_keeps_every_client_on_its_variant_across_reloads_and_instances() -> (
    None
):
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        async with run_gateway(
            split_cfg(a.url, b.url, percent=30, sticky="cookie:pw_canary")
        ) as gw:
            clients: dict[str, str] = {}  # cookie value -> backend
            c = await KeepAlive.open(gw.port)
            try:
                for _ in range(60):  # new clients: no cookie, the gateway sets one
                    status, h, _ = await c.get("/checkout")
                    assert status == 200
                    cookie = h["set-cookie"]
                    assert cookie.startswith("pw_canary=") and "Path=/" in cookie
                    clients[cookie.split(";")[0].split("=", 1)[1]] = h["x-backend"]
                assert set(clients.values()) == {"v1", "v2"}
                for reload in range(3):
                    # a reload that changes nothing for the split (another route added) and
                    # one that rebuilds the whole graph: variants must not move either way
                    cfg = split_cfg(a.url, b.url, percent=30, sticky="cookie:pw_canary")
                    cfg["routes"].append(
                        {"name": f"other{reload}", "match": {"paths": ["/o"]}, "upstream": "v1"}
                    )
                    await gw.reload(cfg)
                    for value, backend in clients.items():
                        for _ in range(3):
                            status, h, _ = await c.get(
                                "/checkout", {"cookie": f"a=b; pw_canary={value}"}
                            )
                            assert status == 200 and h["x-backend"] == backend
                            assert "set-cookie" not in h
            finally:
                await c.aclose()
            # another instance (a second gateway with the same config) agrees: hash, not memory
            cfg = split_cfg(a.url, b.url, percent=30, sticky="cookie:pw_canary")
            async with run_gateway(cfg) as other:
                c2 = await KeepAlive.open(other.port)
                try:
                    for value, backend in clients.items():
                        h = (await c2.get("/checkout", {"cookie": f"pw_canary={value}"}))[1]
                        assert h["x-backend"] == backend
                finally:
                    await c2.aclose()


async def test_variant_in_access_log_metrics_and_explain(tmp_path: Any) -> None:
    log = tmp_path / "access.log"
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        cfg = split_cfg(a.url, b.url, route="visible", percent=50)
        cfg["server"] = {"debug_token": "sekret"}
        cfg["plugins"] = [{"name": "access_log", "config": {"path": str(log)}}]
        async with run_gateway(cfg) as gw:
            before = {
                v: REGISTRY.get_sample_value(
                    "portway_route_variant_requests_total",
                    {"route": "visible", "variant": v, "reason": "split"},
                )
                or 0
                for v in ("v1", "v2")
            }
            seen = await count_backends(gw.port, 20, conns=1)
            assert seen == {"v1": 10, "v2": 10}
            for v in ("v1", "v2"):
                after = REGISTRY.get_sample_value(
                    "portway_route_variant_requests_total",
                    {"route": "visible", "variant": v, "reason": "split"},
                )
                assert after == before[v] + 10
            c = await KeepAlive.open(gw.port)
            try:
                status, h, body = await c.get("/checkout?explain", {"x-portway-debug": "sekret"})
                assert status == 200
                ex = json.loads(body)
                assert ex["traffic"]["reason"] == "split"
                assert ex["traffic"]["variant"] in ("v1", "v2")
                status, h, body = await c.get("/checkout", {"x-portway-debug": "sekret"})
                assert f"variant={h['x-backend']}" in h["x-portway-debug"]
            finally:
                await c.aclose()
            lines = await wait_lines(log, 22)
        variants = Counter(x["variant"] for x in lines if x["route"] == "visible")
        assert variants["v1"] + variants["v2"] == 22
        assert variants["v1"] >= 10 and variants["v2"] >= 10


async def test_sticky_header_and_ip_keys_are_stable_and_follow_the_buckets() -> None:
    async with run_upstream(named("v1")) as a, run_upstream(named("v2")) as b:
        async with run_gateway(split_cfg(a.url, b.url, percent=50, sticky="header:x-user")) as gw:
            ref = _splitter([50])
            c = await KeepAlive.open(gw.port)
            try:
                for user in ("ada", "linus", "grace", "ken", "barbara", "dennis"):
                    want = "v2" if ref.by_bucket(bucket_of(user.encode())).name == "c0" else "v1"
                    for _ in range(5):
                        status, h, _ = await c.get("/checkout", {"x-user": user})
                        assert (status, h["x-backend"]) == (200, want)
                        assert "set-cookie" not in h
                # no key on the request: per-request round robin (exact halves)
                got = Counter([(await c.get("/checkout"))[1]["x-backend"] for _ in range(10)])
                assert got == {"v1": 5, "v2": 5}
            finally:
                await c.aclose()
        async with run_gateway(split_cfg(a.url, b.url, percent=50, sticky="ip")) as gw:
            want = "v2" if _splitter([50]).by_bucket(bucket_of(b"127.0.0.1")).name == "c0" else "v1"
            assert await count_backends(gw.port, 20, conns=2) == {want: 20}
