"""``fault_injection``: exact percentages, only for requests meeting ``when``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from portway.plugins.fault_injection.config import FaultInjectionConfig
from portway.plugins.fault_injection.plugin import Every
from tests.helpers import run_gateway, run_upstream
from tests.proxy.keepalive import KeepAlive


def injected(route: str, kind: str) -> float:
    return (
        REGISTRY.get_sample_value("portway_fault_injections_total", {"route": route, "kind": kind})
        or 0.0
    )


def cfg(up: str, route: str, fault: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {"u": {"targets": [{"url": up}]}},
        "routes": [
            {
                "name": route,
                "match": {"paths": ["/"]},
                "upstream": "u",
                "plugins": [
                    *extra.pop("plugins", []),
                    {"name": "fault_injection", "config": fault},
                ],
            }
        ],
        **extra,
    }


@pytest.mark.parametrize("percent", [0, 0.5, 1, 10, 33.33, 100])
def test_every_is_exact_over_any_run(percent: float) -> None:
    e = Every(percent)
    hits = [e.hit() for _ in range(10_000)]
    assert sum(hits) == round(percent * 100)
    assert sum(hits[:2_000]) == int(2_000 * percent / 100)


async def test_abort_and_delay_percentages_are_exact_and_only_when_matching() -> None:
    fault = {
        "delay": {"ms": 1, "percent": 25},
        "abort": {"status": 503, "percent": 10},
        "when": {"headers": {"x-chaos": "on"}},
    }
    d0, a0 = injected("chaos", "delay"), injected("chaos", "abort")
    async with run_upstream() as up:
        async with run_gateway(cfg(up.url, "chaos", fault)) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                statuses: list[int] = []
                for _ in range(200):
                    status, h, body = await c.get("/x", {"x-chaos": "on"})
                    statuses.append(status)
                    if status == 503:
                        assert h["x-portway-fault"] == "abort"
                        assert orjson.loads(body)["code"] == "fault_injected"
                assert statuses.count(503) == 20 and statuses.count(200) == 180
                assert injected("chaos", "delay") == d0 + 50
                assert injected("chaos", "abort") == a0 + 20
                # production traffic (no x-chaos: on) is untouched
                for hdr in ({}, {"x-chaos": "off"}):
                    for _ in range(50):
                        assert (await c.get("/x", hdr))[0] == 200
                assert injected("chaos", "abort") == a0 + 20
                assert injected("chaos", "delay") == d0 + 50
            finally:
                await c.aclose()
    # aborted requests never reached the upstream
    assert len(up.requests) == 180 + 100


async def test_when_consumer_limits_faults_to_that_consumer() -> None:
    fault = {"abort": {"status": 500, "percent": 100}, "when": {"consumers": ["tester"]}}
    extra = {
        "consumers": [
            {"username": "tester", "credentials": {"key_auth": [{"key": "tester-key"}]}},
            {"username": "prod", "credentials": {"key_auth": [{"key": "prod-key"}]}},
        ],
        "plugins": [{"name": "key_auth"}],
    }
    async with run_upstream() as up:
        async with run_gateway(cfg(up.url, "consumers", fault, **extra)) as gw:
            c = await KeepAlive.open(gw.port)
            try:
                for _ in range(5):
                    assert (await c.get("/x", {"apikey": "tester-key"}))[0] == 500
                    assert (await c.get("/x", {"apikey": "prod-key"}))[0] == 200
            finally:
                await c.aclose()


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="percent"):
        FaultInjectionConfig.model_validate({"abort": {"status": 503, "percent": 101}})
    with pytest.raises(ValueError):
        FaultInjectionConfig.model_validate({"delay": {"ms": -1}})
    with pytest.raises(ValueError, match="Extra inputs"):
        FaultInjectionConfig.model_validate({"abrt": {}})
