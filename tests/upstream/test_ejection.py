"""Passive health through a real gateway: what ejects a target, what never does, panic mode,
and the log line and metric every ejection leaves."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

from portway.observability.metrics import Metrics
from portway.upstream import ejections
from tests.helpers import free_port, run_gateway
from tests.upstream.support import HttpServer
from tests.upstream.test_failover import Client, config

Servers = Callable[[], Awaitable[HttpServer]]


def ejected(upstream: str, reason: str) -> int:
    return ejections.counts().get((upstream, reason), 0)


async def test_origin_5xx_never_eject_with_defaults(http_servers: Servers) -> None:
    """The issue's outage: an only target legitimately answering 503 stays in service and
    its own answers reach the client (no gateway 503 for 10 s)."""
    a = await http_servers()
    a.status = 503
    async with run_gateway(config([a], retries={"attempts": 1})) as gw:
        cl = Client(gw.port)
        statuses = [(await cl.request())[0] for _ in range(20)]
        cl.close()
        target = gw.gateway.graph.upstreams["u"].targets[0]
        assert target.healthy
    assert statuses == [503] * 20
    assert a.hits == 20  # every 503 was the origin's, none the gateway's


async def test_last_target_is_never_ejected_even_when_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = {
        "upstreams": {"u": {"targets": [{"url": dead}], "retries": {"attempts": 1}}},
        "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}],
    }
    caplog.set_level(logging.WARNING, logger="portway.upstream")
    before = ejected("u", "connect_error")
    async with run_gateway(cfg) as gw:
        cl = Client(gw.port)
        statuses = [(await cl.request())[0] for _ in range(12)]
        cl.close()
        assert gw.gateway.graph.upstreams["u"].targets[0].healthy
    # 502 (the connect error) every time: never 503 "no target available"
    assert statuses == [502] * 12
    assert ejected("u", "connect_error") == before
    held = [r for r in caplog.records if getattr(r, "event", "") == "upstream_ejection_held"]
    assert len(held) == 1  # once per streak, not per failure
    assert held[0].__dict__["held_by"] == "last healthy target"
    assert held[0].__dict__["reason"] == "connect_error"


async def test_ejection_is_logged_and_counted_with_its_reason(
    http_servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    a = await http_servers()
    dead_port = free_port()
    cfg = config(
        [a],
        balancing="round_robin",
        retries={"attempts": 2, "on": ["connect_error"], "backoff": "1ms"},
        health={"passive": {"unhealthy_after": 3, "recover_after": "1h"}},
    )
    cfg["upstreams"]["u"]["targets"].append({"url": f"http://127.0.0.1:{dead_port}"})
    caplog.set_level(logging.INFO, logger="portway.upstream")
    before = ejected("u", "connect_error")
    async with run_gateway(cfg) as gw:
        up = gw.gateway.graph.upstreams["u"]
        cl = Client(gw.port)
        statuses = [(await cl.request())[0] for _ in range(10)]
        cl.close()
        dead = up.targets[1]
        assert not dead.healthy and up.targets[0].healthy
        assert not up.panic  # one of two healthy is not below 50 %
        body, _ = Metrics(include_default_registry=False).render()
    assert statuses == [200] * 10  # retried on the live target
    assert ejected("u", "connect_error") == before + 1
    line = f'portway_upstream_ejections_total{{reason="connect_error",upstream="u"}} {before + 1}.0'
    assert line in body.decode()
    logs = [r for r in caplog.records if getattr(r, "event", "") == "upstream_ejection"]
    assert len(logs) == 1
    assert (logs[0].__dict__["target"], logs[0].__dict__["reason"]) == (dead.id, "connect_error")


async def test_panic_mode_routes_to_every_target(
    http_servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    """Statuses count only when configured; once fewer than min_healthy_percent of the
    targets are healthy, requests go to all of them again."""
    a, b, c = await http_servers(), await http_servers(), await http_servers()
    b.status = c.status = 503
    cfg = config(
        [a, b, c],
        balancing="round_robin",
        retries={"attempts": 1},
        health={
            "passive": {
                "unhealthy_after": 1,
                "recover_after": "1h",
                "on_status": [503],
                "max_ejection_percent": 100,
            },
            "min_healthy_percent": 50,
        },
    )
    caplog.set_level(logging.INFO, logger="portway.upstream")
    before = ejected("u", "status")
    async with run_gateway(cfg) as gw:
        up = gw.gateway.graph.upstreams["u"]
        cl = Client(gw.port)
        for _ in range(30):
            await cl.request()
            if up.panic:
                break
        assert up.panic
        assert [t.healthy for t in up.targets] == [True, False, False]
        assert ejected("u", "status") == before + 2
        b.status = c.status = 200
        hits = (a.hits, b.hits, c.hits)
        statuses = [(await cl.request())[0] for _ in range(9)]
        cl.close()
    assert statuses == [200] * 9
    # round robin over all three again: the ejected targets got their share
    assert (a.hits - hits[0], b.hits - hits[1], c.hits - hits[2]) == (3, 3, 3)
    assert any(getattr(r, "event", "") == "upstream_panic" for r in caplog.records)


async def test_max_ejection_percent_keeps_targets_in_service(http_servers: Servers) -> None:
    servers = [await http_servers() for _ in range(4)]
    for s in servers[1:]:
        s.status = 503
    cfg = config(
        servers,
        balancing="round_robin",
        retries={"attempts": 1},
        health={
            "passive": {
                "unhealthy_after": 1,
                "recover_after": "1h",
                "on_status": [503],
                "max_ejection_percent": 25,
            },
            "min_healthy_percent": 0,
        },
    )
    async with run_gateway(cfg) as gw:
        up = gw.gateway.graph.upstreams["u"]
        cl = Client(gw.port)
        for _ in range(20):
            await cl.request()
        cl.close()
        # one of four may be out at once: 25 %
        assert sum(not t.healthy for t in up.targets) == 1
