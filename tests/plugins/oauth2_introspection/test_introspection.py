"""oauth2_introspection against a real local RFC 7662 endpoint."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from urllib.parse import parse_qs

import pytest

from portway.http.models import Request, Response
from portway.plugins.oauth2_introspection.config import IntrospectionConfig
from portway.plugins.oauth2_introspection.plugin import IntrospectionPlugin
from tests.helpers import free_port, run_upstream
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import refused, www_authenticate


class AuthServer:
    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.delay = 0.0
        self.status = 200
        self.seen: list[tuple[str | None, dict[str, list[str]]]] = []

    async def __call__(self, req: Request) -> Response:
        self.calls += 1
        body = await req.body.read_all() if req.body is not None else b""
        form = parse_qs(body.decode())
        self.seen.append((req.headers.get("authorization"), form))
        if self.delay:
            await asyncio.sleep(self.delay)
        if req.headers.get("authorization") != "Basic " + base64.b64encode(b"gw:s%3Acret").decode():
            return Response.json(401, {"error": "invalid_client"})
        tok = form.get("token", [""])[0]
        return Response.json(self.status, self.tokens.get(tok, {"active": False}))


def plugin(url: str, **cfg: Any) -> IntrospectionPlugin:
    conf = {"endpoint": url, "client_id": "gw", "client_secret": "s:cret", "timeout": 0.5, **cfg}
    env = make_env([{"username": "alice", "groups": ["staff"]}])
    return IntrospectionPlugin(IntrospectionConfig.model_validate(conf), env)


def bearer(tok: str) -> Any:
    return make_context(headers=[("authorization", f"Bearer {tok}")])


@pytest.fixture
async def server() -> Any:
    srv = AuthServer()
    srv.tokens["good"] = {
        "active": True,
        "scope": "read write",
        "client_id": "app-1",
        "sub": "user-9",
        "exp": int(time.time()) + 600,
    }
    srv.tokens["alice"] = {"active": True, "username": "alice", "scope": "admin"}
    srv.tokens["expired"] = {"active": True, "exp": int(time.time()) - 5}
    srv.tokens["weird"] = {"active": "true"}
    async with run_upstream(srv) as up:
        yield srv, up.url + "/introspect"


async def test_active_token_is_cached(server: Any) -> None:
    srv, url = server
    p = plugin(url)
    for _ in range(3):
        ctx = bearer("good")
        await p.on_request(ctx)
        c = ctx.consumer
        assert c is not None and c.username == "user-9"
        assert c.scopes == {"read", "write"} and c.claims["client_id"] == "app-1"
    assert srv.calls == 1
    auth, form = srv.seen[0]
    assert auth is not None and auth.startswith("Basic ")
    assert form == {"token": ["good"], "token_type_hint": ["access_token"]}


async def test_inactive_tokens_refused_and_negatively_cached(server: Any) -> None:
    srv, url = server
    p = plugin(url)
    for tok in ("unknown", "unknown", "expired", "weird"):
        e = await refused(p, bearer(tok))
        assert e.status == 401 and e.message == "invalid token"
        assert www_authenticate(e) == ['Bearer realm="portway", error="invalid_token"']
    assert srv.calls == 3


async def test_negative_cache_expires(server: Any) -> None:
    srv, url = server
    p = plugin(url, negative_cache_ttl=0.05)
    await refused(p, bearer("later"))
    srv.tokens["later"] = {"active": True, "sub": "x"}
    await asyncio.sleep(0.1)
    ctx = bearer("later")
    await p.on_request(ctx)
    assert ctx.consumer is not None and srv.calls == 2


async def test_consumer_claim(server: Any) -> None:
    _, url = server
    p = plugin(url, consumer_claim="username")
    ctx = bearer("alice")
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.groups == {"staff"}
    assert ctx.consumer.scopes == {"admin"}
    assert (await refused(p, bearer("good"))).status == 401


async def test_concurrent_requests_share_one_call(server: Any) -> None:
    srv, url = server
    srv.delay = 0.1
    p = plugin(url)
    ctxs = [bearer("good") for _ in range(10)]
    await asyncio.gather(*(p.on_request(c) for c in ctxs))
    assert all(c.consumer is not None for c in ctxs) and srv.calls == 1


async def test_slow_server_gives_503_by_default(server: Any) -> None:
    srv, url = server
    srv.delay = 1.0
    p = plugin(url, timeout=0.1)
    start = time.perf_counter()
    e = await refused(p, bearer("good"))
    assert e.status == 503 and e.code == "service_unavailable"
    assert time.perf_counter() - start < 0.8
    e = await refused(plugin(url, timeout=0.1, on_error="unauthorized"), bearer("good"))
    assert e.status == 401


async def test_server_errors_and_garbage_are_unavailable(server: Any) -> None:
    srv, url = server
    srv.status = 500
    assert (await refused(plugin(url), bearer("good"))).status == 503
    # wrong client credentials: the endpoint answers 401, which is our problem, not the client's
    p = IntrospectionPlugin(
        IntrospectionConfig(endpoint=url, client_id="gw", client_secret="wrong"), make_env()
    )
    srv.status = 200
    assert (await refused(p, bearer("good"))).status == 503


async def test_server_down() -> None:
    p = plugin(f"http://127.0.0.1:{free_port()}/introspect")
    e = await refused(p, bearer("good"))
    assert e.status == 503
    # failures are not cached: the endpoint is asked again next time
    assert (await refused(p, bearer("good"))).status == 503
    assert p.calls == 2


async def test_missing_and_malformed_tokens_never_call_out(server: Any) -> None:
    srv, url = server
    p = plugin(url)
    assert (await refused(p, make_context())).message == "missing credentials"
    assert (await refused(p, bearer("a b"))).status == 401
    assert (await refused(p, bearer("x" * 9000))).status == 401
    assert srv.calls == 0


def test_config_requires_http_endpoint() -> None:
    with pytest.raises(ValueError):
        IntrospectionConfig(endpoint="ftp://x", client_id="a", client_secret="b")
