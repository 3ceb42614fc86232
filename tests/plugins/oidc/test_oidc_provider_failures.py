"""The provider down, slow or answering nonsense: clear 502/503 answers (a page for browsers,
JSON for the rest), never a redirect loop; outages keep the last good discovery and keys."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from portway.http.client import simple_request
from portway.http.models import Request, Response
from tests.helpers import free_port, run_upstream
from tests.plugins.oidc.conftest import (
    Browser,
    gateway_config,
    oidc_config,
    run_gateway_on,
    start_idp,
    stop_idp,
)


def _cfg(issuer: str, **over: Any) -> dict[str, Any]:
    class _P:  # oidc_config only reads .issuer
        pass

    p: Any = _P()
    p.issuer = issuer
    return {**oidc_config(p), **over}


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers (a hung provider)."""
    conns: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in conns:
            w.close()
        server.close()


async def test_provider_down_or_hung_gives_503_never_a_redirect() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with silent_server() as hung_port, run_upstream() as up:
        for issuer in (dead, f"http://127.0.0.1:{hung_port}"):
            # a short timeout makes the hung provider's case quick; the answer is a 503 however
            # long the wait
            cfg = gateway_config(
                up.url, [{"name": "oidc", "config": _cfg(issuer, timeout="300ms")}]
            )
            port = free_port()
            async with run_gateway_on(port, cfg):
                gw = f"http://127.0.0.1:{port}"
                r = await Browser().get(gw + "/app")
                assert r.status == 503, (r.status, r.body[:200])
                assert r.headers.get("location") is None
                assert b"<html" in r.body and b"identity provider unavailable" in r.body
                r2 = await simple_request("GET", gw + "/app", headers=[("accept", "*/*")])
                assert r2.status == 503
                body = orjson.loads(r2.body)
                assert body["code"] == "service_unavailable"
                assert body["error"] == "identity provider unavailable"
        assert up.requests == []


async def test_bad_token_endpoint_gives_502_page_at_the_callback() -> None:
    """A provider whose token endpoint answers 500 HTML: the callback shows a 502 page."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    async def provider(req: Request) -> Response:
        if req.path == "/.well-known/openid-configuration":
            return Response.json(
                200,
                {
                    "issuer": base,
                    "authorization_endpoint": base + "/auth",
                    "token_endpoint": base + "/token",
                    "jwks_uri": base + "/jwks",
                    "id_token_signing_alg_values_supported": ["RS256"],
                },
            )
        if req.path == "/jwks":
            return Response.json(200, {"keys": []})
        return Response.text(500, "<html>internal error</html>", "text/html")

    async with run_upstream(provider, port=port), run_upstream() as up:
        gw_port = free_port()
        cfg = gateway_config(up.url, [{"name": "oidc", "config": _cfg(base)}])
        async with run_gateway_on(gw_port, cfg):
            gw = f"http://127.0.0.1:{gw_port}"
            b = Browser()
            r = await b.get(gw + "/app")
            assert r.status == 302 and r.location.startswith(base + "/auth?")
            state = parse_qs(urlsplit(r.location).query)["state"][0]
            cb = gw + "/oauth2/callback?" + urlencode({"code": "abc", "state": state})
            r = await b.get(cb)
            assert r.status == 502, (r.status, r.body[:300])
            assert b"identity provider is unavailable" in r.body
            assert b'href="/app"' in r.body  # a link to try again, not a redirect
            assert r.headers.get("location") is None
        assert up.requests == []


async def test_outage_keeps_last_good_discovery_and_keys() -> None:
    gw_port = free_port()
    idp = start_idp(gw_port)
    try:
        async with run_upstream() as up:
            cfg = gateway_config(up.url, [{"name": "oidc", "config": _cfg(idp.issuer)}])
            async with run_gateway_on(gw_port, cfg) as gw:
                plugin = gw.plugin()
                basic = base64.b64encode(b"api-client:api-client-secret").decode()
                r = await simple_request(
                    "POST",
                    idp.issuer + "/token",
                    headers=[
                        ("authorization", "Basic " + basic),
                        ("content-type", "application/x-www-form-urlencoded"),
                    ],
                    body=b"grant_type=client_credentials&scope=api&resource=urn%3Aportway%3Aapi",
                )
                token = orjson.loads(r.body)["access_token"]
                b = Browser()
                r = await b.get(idp.gateway + "/app")
                back = await b.provider_login(r)
                cb = await b.get(back.location)
                assert (await b.get(cb.location)).status == 200

                stop_idp(idp)
                fetches = plugin.provider.discovery_fetches
                assert await plugin.provider._refresh_metadata() is None  # fails, keeps old
                assert plugin.provider.discovery_fetches == fetches + 1
                keys = plugin.provider.keys
                assert keys is not None and not await keys.refresh()
                # sessions and bearer tokens keep working on the last good keys
                assert (await b.get(cb.location)).status == 200
                r = await simple_request(
                    "GET", idp.gateway + "/app", headers=[("authorization", f"Bearer {token}")]
                )
                assert r.status == 200
                # a new login still starts (metadata kept); the provider being down is the
                # browser's to see, the gateway does not loop
                r = await Browser().get(idp.gateway + "/other")
                assert r.status == 302 and r.location.startswith(idp.issuer)
    finally:
        stop_idp(idp)
