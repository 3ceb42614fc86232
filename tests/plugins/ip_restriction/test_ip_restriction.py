"""``ip_restriction`` through a real gateway: trusted proxies, spoofing, IPv6, mapped IPv4."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.plugin import PluginEnv
from portway.plugins.ip_restriction.config import IpRestrictionConfig
from portway.plugins.ip_restriction.plugin import IpRestrictionPlugin, client_address
from tests.helpers import assert_plugin_config_error, free_port, run_gateway, run_upstream

RULES = {"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.6.6.0/24"], "status": 403}


def config(up_url: str, rules: dict[str, object] = RULES, **extra: object) -> dict[str, object]:
    cfg: dict[str, object] = {
        "upstreams": {"u": {"targets": [{"url": up_url}]}},
        "routes": [
            {
                "name": "r",
                "match": {"paths": ["/"]},
                "upstream": "u",
                "plugins": [{"name": "ip_restriction", "config": rules}],
            }
        ],
    }
    cfg.update(extra)
    return cfg


async def get(url: str, xff: str | None = None) -> tuple[int, bytes]:
    headers = [("x-forwarded-for", xff)] if xff is not None else []
    r = await simple_request("GET", url, headers=headers)
    return r.status, r.body


async def test_client_ip_through_trusted_proxy_deny_wins() -> None:
    trusted = {"server": {"trusted_proxies": ["127.0.0.1/32"]}}
    async with run_upstream() as up, run_gateway(config(up.url, **trusted)) as gw:
        ok = await get(gw.url + "/a", "203.0.113.9, 10.1.2.3")  # right-most untrusted hop
        denied = await get(gw.url + "/b", "10.6.6.5")  # in allow 10/8, but deny wins
        outside = await get(gw.url + "/c", "192.0.2.1")
        mapped = await get(gw.url + "/d", "::ffff:10.6.6.7")  # IPv4-mapped: still denied
        mapped_ok = await get(gw.url + "/e", "::ffff:10.9.9.9")
        v6 = await get(gw.url + "/f", "2001:db8::1")
        paths = [r.path for r in up.requests]
        # sync_hooks: allowed requests after the first (which opened the pooled connection)
        # take the task-free path
        assert gw.worker.app is not None and gw.worker.app.fast_requests >= 1
    assert ok[0] == 200 and mapped_ok[0] == 200 and v6[0] == 200
    assert paths == ["/a", "/e", "/f"]  # refused requests never reached the upstream
    for status, body in (denied, outside, mapped):
        assert status == 403
        doc = orjson.loads(body)
        assert doc["code"] == "ip_restricted" and doc["status"] == 403 and doc["error"]


async def test_spoofed_xff_from_untrusted_peer_changes_nothing() -> None:
    rules = {"allow": ["10.0.0.0/8"], "status": 451, "message": "not from here"}
    deny_local = {"deny": ["127.0.0.0/8"]}
    async with run_upstream() as up:
        async with run_gateway(config(up.url, rules)) as gw:
            spoofed = await get(gw.url + "/", "10.1.2.3")
        async with run_gateway(config(up.url, deny_local)) as gw:
            spoofed2 = await get(gw.url + "/", "10.1.2.3")
            no_xff = await get(gw.url + "/")
        assert up.requests == []
    assert spoofed[0] == 451 and orjson.loads(spoofed[1])["error"] == "not from here"
    assert spoofed2[0] == 403 and no_xff[0] == 403


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def _get_v6(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("::1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    return int(line.split()[1])


async def test_ipv6_client() -> None:
    if not _ipv6_loopback():
        # no ::1 here: the IPv6 rules are still exercised on the resolved client address
        test_client_address_ipv6_and_mapped()
        return
    v6_port = free_port()
    listeners = [{"name": "public"}, {"name": "v6", "address": f"[::1]:{v6_port}"}]
    async with run_upstream() as up:
        cfg = config(up.url, {"allow": ["::1/128"], "deny": ["2001:db8::/32"]}, listeners=listeners)
        async with run_gateway(cfg) as gw:
            v6 = await _get_v6(v6_port, "/six")
            v4 = await get(gw.url + "/four")
        cfg = config(up.url, {"allow": ["2001:db8::/32"]}, listeners=listeners)
        async with run_gateway(cfg) as gw:
            v6_refused = await _get_v6(v6_port, "/six-refused")
        assert [r.path for r in up.requests] == ["/six"]
        assert up.requests[0].headers.get("x-real-ip") == "::1"
    assert v6 == 200 and v4[0] == 403 and v6_refused == 403


async def test_ipv4_mapped_peer_on_a_v6_socket() -> None:
    """An IPv6 socket accepting IPv4 clients reports them as ::ffff:a.b.c.d: IPv4 rules
    still apply to them."""
    port = free_port()
    listeners = [{"name": "public"}, {"name": "mapped", "address": f"[::ffff:127.0.0.1]:{port}"}]
    url = f"http://127.0.0.1:{port}"
    async with run_upstream() as up:
        cfg = config(up.url, {"allow": ["127.0.0.0/8"]}, listeners=listeners)
        async with run_gateway(cfg) as gw:
            allowed = await get(url + "/allowed")
        cfg = config(up.url, {"deny": ["127.0.0.1/32"]}, listeners=listeners)
        async with run_gateway(cfg) as gw:
            denied = await get(url + "/denied")
            plain_v4 = await get(gw.url + "/plain")  # the IPv4 listener: same rule, same answer
        assert [r.path for r in up.requests] == ["/allowed"]
        assert up.requests[0].headers.get("x-real-ip") == "::ffff:127.0.0.1"
    assert allowed[0] == 200 and denied[0] == 403 and plain_v4[0] == 403


def test_client_address_ipv6_and_mapped() -> None:
    def req(ip: str) -> Request:
        return Request("GET", "/", b"", Headers(), client_ip=ip)

    p = IpRestrictionPlugin(IpRestrictionConfig.model_validate(RULES), PluginEnv())
    assert str(client_address(req("::ffff:10.0.0.1"))) == "10.0.0.1"
    assert p.allowed("::ffff:10.0.0.1") and p.allowed("10.0.0.1")
    assert not p.allowed("::ffff:10.6.6.1")
    assert p.allowed("2001:db8:1::5") and p.allowed("[2001:db8::1]")
    assert p.allowed("2001:db8::1%eth0")
    assert not p.allowed("2001:db9::1") and not p.allowed("::1")
    assert not p.allowed("not-an-ip") and not p.allowed("")
    # an IPv4-mapped range in the config matches the plain IPv4 client too
    mapped_cfg = IpRestrictionConfig.model_validate({"allow": ["::ffff:192.0.2.0/120"]})
    p2 = IpRestrictionPlugin(mapped_cfg, PluginEnv())
    assert p2.allowed("192.0.2.7") and p2.allowed("::ffff:192.0.2.7")
    assert not p2.allowed("192.0.3.1")


@pytest.mark.parametrize(
    "cfg, where, message",
    [
        ("{allow: ['10.0.0.0/33']}", "allow", "invalid CIDR"),
        ("{deny: [nonsense]}", "deny", "invalid CIDR"),
        ("{allow: ['10.0.0.0/8'], status: 200}", "status", "must be at least 400"),
        ("{status: 403}", "config", "set allow, deny or both"),
    ],
)
def test_bad_config_rejected_with_path_and_line(cfg: str, where: str, message: str) -> None:
    assert_plugin_config_error("ip_restriction", cfg, where, message)
