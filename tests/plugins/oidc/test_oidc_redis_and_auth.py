"""The Redis session store (revocation on logout, store outage) and ``oidc`` inside
``auth: {any: [...]}`` next to ``key_auth``."""

from __future__ import annotations

from typing import Any

import orjson

from portway.http.client import simple_request
from tests.conftest import RedisServer
from tests.helpers import run_upstream
from tests.plugins.oidc.conftest import (
    Browser,
    Idp,
    Reply,
    gateway_config,
    oidc_config,
    run_gateway_on,
)


async def login(b: Browser, idp: Idp, path: str, user: str) -> Reply:
    r = await b.get(idp.gateway + path)
    back = await b.provider_login(r, user)
    return await b.get(back.location)


def redis_plugins(idp: Idp, url: str, prefix: str) -> list[dict[str, Any]]:
    session = {"store": "redis", "redis": {"url": url, "key_prefix": prefix}}
    return [{"name": "oidc", "config": oidc_config(idp, session=session)}]


async def test_redis_sessions_are_revoked_on_logout(
    idp: Idp, redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    cfg = gateway_config("", redis_plugins(idp, redis_url, redis_prefix))
    async with run_upstream() as up:
        cfg["upstreams"]["app"]["targets"] = [{"url": up.url}]
        async with run_gateway_on(idp.gateway_port, cfg):
            b = Browser()
            r = await b.get(idp.gateway + "/app")
            back = await b.provider_login(r)
            cb = await b.get(back.location)
            # the cookie holds only a sealed id: one short cookie, the tokens are in Redis
            value = b.cookies(idp.gateway)["pw_session"].value
            assert len(value) < 200 and "pw_session.1" not in b.cookies(idp.gateway)
            client = aioredis.Redis.from_url(redis_url)
            keys = [k async for k in client.scan_iter(match=f"{redis_prefix}session:*")]
            assert len(keys) == 1
            stored = await client.get(keys[0])
            assert stored is not None and b"alice" not in stored  # sealed at rest too
            assert 0 < await client.ttl(keys[0]) <= 1800
            r = await b.get(cb.location)
            assert r.status == 200

            # a login completed by a browser that already carries a session cookie mints a
            # new session id and ends the old one (no fixation)
            a = Browser()
            back2 = await a.provider_login(await a.get(idp.gateway + "/x"), "bob")
            a.cookies(idp.gateway)["pw_session"] = b.cookies(idp.gateway)["pw_session"]
            cb2 = await a.get(back2.location)
            assert cb2.status == 302
            assert a.cookies(idp.gateway)["pw_session"].value != value
            keys_now = [k async for k in client.scan_iter(match=f"{redis_prefix}session:*")]
            assert keys[0] not in keys_now and len(keys_now) == 1
            r = await Browser(jar=b.jar, accept="application/json").get(cb.location)
            assert r.status == 401  # b's (the replaced) session is over
            b.jar = {k: dict(v) for k, v in a.jar.items()}
            r = await b.get(idp.gateway + "/logout")
            assert r.status == 302
            assert [k async for k in client.scan_iter(match=f"{redis_prefix}session:*")] == []
            # a copy of the cookie taken before logout no longer opens anything
            stolen = a._header(cb.location)
            assert stolen is not None and "pw_session=" in stolen
            r = await simple_request(
                "GET", cb.location, headers=[("cookie", stolen), ("accept", "application/json")]
            )
            assert r.status == 401
            await client.aclose()
            assert len(up.requests) == 1


async def test_redis_down_gives_503(idp: Idp, private_redis: RedisServer) -> None:
    cfg = gateway_config("", redis_plugins(idp, private_redis.url, "t:"))
    async with run_upstream() as up:
        cfg["upstreams"]["app"]["targets"] = [{"url": up.url}]
        async with run_gateway_on(idp.gateway_port, cfg):
            b = Browser()
            r = await b.get(idp.gateway + "/app")
            back = await b.provider_login(r)
            cb = await b.get(back.location)
            assert (await b.get(cb.location)).status == 200
            private_redis.stop()
            r = await b.get(cb.location)
            assert r.status == 503 and b"session store unavailable" in r.body
            assert r.headers.get("location") is None


async def test_oidc_inside_auth_any_with_key_auth(idp: Idp) -> None:
    consumers = [
        {"username": "ci-bot", "credentials": {"key_auth": [{"key": "k-123456789"}]}},
        {"username": "alice", "groups": ["staff"]},
    ]
    auth = {
        "name": "auth",
        "config": {"any": [{"name": "oidc", "config": oidc_config(idp)}, "key_auth"]},
    }
    async with run_upstream() as up:
        cfg = gateway_config(up.url, [auth])
        cfg["consumers"] = consumers
        async with run_gateway_on(idp.gateway_port, cfg):
            # an API key passes without any login
            r = await simple_request(
                "GET", idp.gateway + "/app", headers=[("apikey", "k-123456789")]
            )
            assert r.status == 200, r.body
            assert dict(orjson.loads(r.body)["headers"])["x-consumer-username"] == "ci-bot"
            # a wrong key is a 401, not a login redirect
            r = await simple_request("GET", idp.gateway + "/app", headers=[("apikey", "wrong")])
            assert r.status == 401
            # a browser without credentials is sent to the provider; the callback and the
            # session cookie work through the combinator
            b = Browser()
            r = await b.get(idp.gateway + "/app")
            assert r.status == 302 and r.location.startswith(idp.issuer)
            back = await b.provider_login(r)
            cb = await b.get(back.location)
            assert cb.status == 302 and "pw_session" in b.cookies(idp.gateway)
            r = await b.get(cb.location)
            assert r.status == 200
            h = dict(orjson.loads(r.body)["headers"])
            # "alice" is a configured consumer: her groups apply
            assert h["x-consumer-username"] == "alice" and h["x-consumer-groups"] == "staff"


async def test_oidc_with_acl_rate_limit_and_identity_headers(idp: Idp) -> None:
    """Alice (a configured consumer in group staff) passes acl and has her own rate limit;
    bob (not configured, no groups) is refused by acl; identity_headers forwards claims."""
    plugins_ = [
        {"name": "oidc", "config": oidc_config(idp)},
        {"name": "identity_headers", "config": {"claims": {"name": "X-User-Name"}}},
        {"name": "acl", "config": {"allow": ["staff"]}},
        {
            "name": "rate_limit",
            "config": {
                "algorithm": "sliding_window",
                "limits": [{"rate": 2, "per": "1h"}],
                "key": ["consumer"],
            },
        },
    ]
    async with run_upstream() as up:
        cfg = gateway_config(up.url, plugins_)
        cfg["consumers"] = [{"username": "alice", "groups": ["staff"]}]
        async with run_gateway_on(idp.gateway_port, cfg):
            alice = Browser()
            cb = await login(alice, idp, "/a", user="alice")
            r = await alice.get(cb.location, headers=[("x-user-name", "forged")])
            assert r.status == 200
            h = dict(orjson.loads(r.body)["headers"])
            assert h["x-user-name"] == "alice" and h["x-consumer-groups"] == "staff"
            assert (await alice.get(cb.location)).status == 200
            assert (await alice.get(cb.location)).status == 429  # her own limit: 2 per hour
            bob = Browser()
            cb = await login(bob, idp, "/b", user="bob")
            r = await bob.get(cb.location)
            assert r.status == 403  # signed in, but not in an allowed group
            assert len(up.requests) == 2
