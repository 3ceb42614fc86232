"""DNS discovery against a UDP DNS server started by the test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from portway.config.schema import DiscoveryConfig, UpstreamConfig
from portway.upstream.discovery import DiscoveryError, DnsResolver, Endpoint
from portway.upstream.target import Target
from portway.upstream.upstream import Upstream
from tests.upstream.support import CtxFactory, DnsServer


class FakePool:
    def __init__(self, t: Target) -> None:
        self.target = t
        self.closed = False

    def close(self) -> None:
        self.closed = True


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def make_upstream(dns: DnsServer, name: str, **kw: Any) -> tuple[Upstream, list[Any]]:
    events: list[Any] = []
    cfg = UpstreamConfig.model_validate(
        {
            "discovery": {
                "dns": name,
                "port": 9101,
                "refresh": "40ms",
                "nameserver": dns.address,
                **kw,
            }
        }
    )
    up = Upstream(
        "orders",
        cfg,
        make_pool=FakePool,
        on_state_change=lambda u, t, w, v: events.append((t.id, w, v)),
    )
    return up, events


def ids(up: Upstream) -> list[str]:
    return sorted(t.id for t in up.targets)


async def test_a_records_followed_without_reload(
    dns_server: DnsServer, make_ctx: CtxFactory
) -> None:
    dns_server.records["orders.test."] = [("A", "127.0.0.1"), ("A", "127.0.0.2")]
    up, events = make_upstream(dns_server, "orders.test")
    await up.start()
    try:
        assert ids(up) == ["127.0.0.1:9101", "127.0.0.2:9101"]
        first, second = sorted(up.targets, key=lambda t: t.id)
        assert isinstance(first.pool, FakePool)
        assert up.pick(make_ctx(), set()) in (first, second)
        # a request is in flight on .2 when it disappears from DNS
        second.in_flight = 1
        old_pool = second.pool
        dns_server.records["orders.test."] = [("A", "127.0.0.1"), ("A", "127.0.0.3")]
        await wait_for(lambda: "127.0.0.3:9101" in ids(up))
        assert ids(up) == ["127.0.0.1:9101", "127.0.0.3:9101"]
        assert first in up.targets and first.pool is not None  # identity and pool kept
        assert second.draining and not old_pool.closed  # still serving its request
        assert all(up.pick(make_ctx(), set()) is not second for _ in range(20))
        snap = {s["id"]: s for s in up.snapshot()}
        assert snap["127.0.0.2:9101"]["draining"] is True
        second.in_flight = 0
        up.record(second, True, 0.01, 200)
        assert old_pool.closed
        assert "127.0.0.2:9101" not in {s["id"] for s in up.snapshot()}
    finally:
        await up.aclose()
    assert ("127.0.0.3:9101", "added", True) in events
    assert ("127.0.0.2:9101", "removed", True) in events


async def test_failures_keep_last_good_set(dns_server: DnsServer) -> None:
    dns_server.records["svc.test."] = [("A", "127.0.0.5")]
    up, _ = make_upstream(dns_server, "svc.test")
    await up.start()
    try:
        assert ids(up) == ["127.0.0.5:9101"]
        kept = up.targets[0]
        dns_server.fail = True
        before = dns_server.queries
        await wait_for(lambda: dns_server.queries >= before + 4)
        assert up.targets == [kept]
        assert up.discovery is not None and up.discovery.failing
        dns_server.fail = False
        del dns_server.records["svc.test."]  # NXDOMAIN
        before = dns_server.queries
        await wait_for(lambda: dns_server.queries >= before + 2)
        assert up.targets == [kept]
        dns_server.records["svc.test."] = [("A", "127.0.0.6")]
        await wait_for(lambda: ids(up) == ["127.0.0.6:9101"])
        assert not up.discovery.failing
    finally:
        await up.aclose()


async def test_start_with_unresolvable_name_then_recovers(
    dns_server: DnsServer, make_ctx: CtxFactory
) -> None:
    up, _ = make_upstream(dns_server, "later.test")
    await up.start()
    try:
        assert up.targets == []
        assert up.pick(make_ctx(), set()) is None
        assert up.retry_after() == 1
        dns_server.records["later.test."] = [("A", "127.0.0.7"), ("AAAA", "::1")]
        await wait_for(lambda: len(up.targets) == 2)
        assert ids(up) == ["127.0.0.7:9101", "[::1]:9101"]
        v6 = next(t for t in up.targets if t.host == "::1")
        assert v6.url == "http://[::1]:9101"
    finally:
        await up.aclose()


async def test_srv_lowest_priority_with_weights_and_ports(dns_server: DnsServer) -> None:
    dns_server.records["_http._tcp.orders.test."] = [
        ("SRV", "10 30 9201 a.orders.test."),
        ("SRV", "10 0 9202 b.orders.test."),
        ("SRV", "20 10 9203 c.orders.test."),
    ]
    dns_server.records["a.orders.test."] = [("A", "127.0.1.1")]
    dns_server.records["b.orders.test."] = [("A", "127.0.1.2"), ("A", "127.0.1.3")]
    dns_server.records["c.orders.test."] = [("A", "127.0.1.4")]
    up, _ = make_upstream(dns_server, "_http._tcp.orders.test")
    await up.start()
    try:
        got = {t.id: t.weight for t in up.targets}
        assert got == {"127.0.1.1:9201": 30, "127.0.1.2:9202": 1, "127.0.1.3:9202": 1}
        # weights change in place
        dns_server.records["_http._tcp.orders.test."][0] = ("SRV", "10 5 9201 a.orders.test.")
        await wait_for(lambda: {t.id: t.weight for t in up.targets}["127.0.1.1:9201"] == 5)
    finally:
        await up.aclose()


async def test_resolver_errors(dns_server: DnsServer) -> None:
    r = DnsResolver(DiscoveryConfig(dns="nope.test", nameserver=dns_server.address), timeout=1.0)
    with pytest.raises(DiscoveryError):
        await r.resolve()
    dns_server.records["_x._tcp.none.test."] = [("SRV", "0 0 0 .")]
    r = DnsResolver(DiscoveryConfig(dns="_x._tcp.none.test", nameserver=dns_server.address))
    with pytest.raises(DiscoveryError):
        await r.resolve()


async def test_dead_nameserver_times_out_quickly() -> None:
    # a bound UDP socket that never answers
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        r = DnsResolver(DiscoveryConfig(dns="x.test", nameserver=f"127.0.0.1:{port}"), 0.2)
        t0 = loop.time()
        with pytest.raises(DiscoveryError):
            await r.resolve()
        assert loop.time() - t0 < 2.0
    finally:
        transport.close()


async def test_system_resolver_for_a_records() -> None:
    r = DnsResolver(DiscoveryConfig(dns="localhost", port=8080))
    eps = await r.resolve()
    assert Endpoint("127.0.0.1", 8080) in eps or Endpoint("::1", 8080) in eps


async def test_static_targets_kept_alongside_discovered(dns_server: DnsServer) -> None:
    dns_server.records["mix.test."] = [("A", "127.0.0.1"), ("A", "127.0.0.9")]
    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": "http://127.0.0.1:9101"}],
            "discovery": {
                "dns": "mix.test",
                "port": 9101,
                "refresh": "1h",
                "nameserver": dns_server.address,
            },
        }
    )
    up = Upstream("mix", cfg)
    await up.start()
    try:
        assert ids(up) == ["127.0.0.1:9101", "127.0.0.9:9101"]
        assert [t.discovered for t in up.targets] == [False, True]
    finally:
        await up.aclose()
