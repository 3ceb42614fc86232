"""JWKS: fetched from a real local HTTP server that rotates keys, goes slow and goes down."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from portway.http.models import Request, Response
from portway.plugins.jwt.config import JwtConfig
from portway.plugins.jwt.jwks import parse_jwks
from portway.plugins.jwt.plugin import JwtPlugin
from tests.helpers import free_port, http_get, run_gateway, run_upstream
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import claims, ec_key, mint, public_jwk, refused, rsa_key


class JwksServer:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        self.status = 200
        self.delay = 0.0

    async def __call__(self, req: Request) -> Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return Response.json(self.status, {"keys": self.keys})


def plugin(url: str, **cfg: Any) -> JwtPlugin:
    conf = {
        "issuers": [{"issuer": "idp", "algorithms": ["RS256", "ES256"], "jwks_url": url}],
        "jwks_min_refresh": 60,
        "jwks_timeout": 0.5,
        **cfg,
    }
    return JwtPlugin(JwtConfig.model_validate(conf), make_env())


def ctx_for(token: str) -> Any:
    return make_context(headers=[("authorization", f"Bearer {token}")])


async def test_unknown_kid_triggers_exactly_one_refresh() -> None:
    srv = JwksServer()
    k1, k2 = rsa_key(), ec_key("P-256")
    srv.keys = [public_jwk(k1, kid="k1", alg="RS256")]
    async with run_upstream(srv) as up:
        p = plugin(up.url + "/jwks")
        await p.start()
        try:
            assert srv.hits == 1
            c = ctx_for(mint(claims(iss="idp"), k1, "RS256", kid="k1"))
            await p.on_request(c)
            assert c.consumer is not None and srv.hits == 1
            # the issuer rotates: k2 appears; a k2 token makes one refresh, then is accepted
            srv.keys = [public_jwk(k1, kid="k1", alg="RS256"), public_jwk(k2, kid="k2")]
            t2 = mint(claims(iss="idp"), k2, "ES256", kid="k2")
            results = await asyncio.gather(*(p.on_request(ctx_for(t2)) for _ in range(5)))
            assert results == [None] * 5
            assert srv.hits == 2
            # further unknown kids within jwks_min_refresh do not fetch again
            for i in range(5):
                await refused(p, ctx_for(mint(claims(iss="idp"), k2, "ES256", kid=f"x{i}")))
            assert srv.hits == 2
        finally:
            await p.aclose()


async def test_jwks_down_keeps_last_good_keys() -> None:
    srv = JwksServer()
    k1 = rsa_key()
    srv.keys = [public_jwk(k1, kid="k1")]
    async with run_upstream(srv) as up:
        p = plugin(up.url, jwks_min_refresh=0)
        await p.start()
    # server gone: refresh attempts fail, the cached key still verifies
    try:
        cache = p.jwks("idp")
        assert cache is not None
        assert await cache.refresh() is False
        c = ctx_for(mint(claims(iss="idp"), k1, "RS256", kid="k1"))
        await p.on_request(c)
        assert c.consumer is not None
        e = await refused(p, ctx_for(mint(claims(iss="idp"), k1, "RS256", kid="new")))
        assert e.status == 401
    finally:
        await p.aclose()


async def test_error_answers_and_garbage_keep_last_keys() -> None:
    srv = JwksServer()
    k1 = rsa_key()
    srv.keys = [public_jwk(k1, kid="k1")]
    async with run_upstream(srv) as up:
        p = plugin(up.url, jwks_min_refresh=0)
        await p.start()
        try:
            cache = p.jwks("idp")
            assert cache is not None
            srv.status = 500
            assert await cache.refresh() is False
            srv.status, srv.keys = 200, [{"kty": "oct", "k": "c2VjcmV0"}]
            assert await cache.refresh() is False  # symmetric keys are never taken from a JWKS
            srv.delay = 2.0
            assert await cache.refresh() is False  # timeout
            c = ctx_for(mint(claims(iss="idp"), k1, "RS256", kid="k1"))
            await p.on_request(c)
            assert c.consumer is not None
        finally:
            await p.aclose()


async def test_start_survives_an_unreachable_jwks_and_recovers_on_demand() -> None:
    port = free_port()
    p = plugin(f"http://127.0.0.1:{port}/jwks", jwks_min_refresh=0)
    await p.start()  # must not raise
    try:
        k1 = rsa_key()
        tok = mint(claims(iss="idp"), k1, "RS256", kid="k1")
        assert (await refused(p, ctx_for(tok))).status == 401
        srv = JwksServer()
        srv.keys = [public_jwk(k1, kid="k1")]
        async with run_upstream(srv, port=port):
            c = ctx_for(tok)
            await p.on_request(c)
            assert c.consumer is not None and srv.hits == 1
    finally:
        await p.aclose()


async def test_jwk_algorithm_binding() -> None:
    k1 = rsa_key()
    keys = parse_jwks(
        orjson.dumps({"keys": [public_jwk(k1, kid="a", alg="PS256"), {"kty": "RSA"}, "junk"]}),
        frozenset({"RS256", "PS256"}),
    )
    assert len(keys) == 1 and keys[0].algorithms == {"PS256"}
    srv = JwksServer()
    srv.keys = [public_jwk(k1, kid="a", alg="PS256")]
    async with run_upstream(srv) as up:
        p = plugin(up.url)
        await p.start()
        try:
            # an RS256 signature by the same RSA key is refused: the JWK says PS256 only
            await refused(p, ctx_for(mint(claims(iss="idp"), k1, "RS256", kid="a")))
        finally:
            await p.aclose()


async def test_a_jwks_route_is_task_free_and_an_unknown_kid_is_fetched_while_parked() -> None:
    """Every jwt binding has sync hooks: a known kid is verified inside the parser callback;
    an unknown kid makes the hook await the JWKS fetch (a future): the request is parked on
    the task-free path (proxy/fast.py ``Parked``) and carries on from the fetch's callback
    with the new keys, still without a task."""
    srv = JwksServer()
    k1, k2 = rsa_key(), rsa_key()
    srv.keys = [public_jwk(k1, kid="k1", alg="RS256")]
    async with run_upstream(srv) as jwks, run_upstream() as up:
        cfg = {
            "upstreams": {"u": {"targets": [{"url": up.url}]}},
            "routes": [
                {
                    "name": "r",
                    "match": {"paths": ["/"]},
                    "upstream": "u",
                    "plugins": [
                        {
                            "name": "jwt",
                            "config": {
                                "issuers": [
                                    {
                                        "issuer": "idp",
                                        "algorithms": ["RS256"],
                                        "jwks_url": jwks.url + "/jwks",
                                    }
                                ],
                                "jwks_min_refresh": 0,
                            },
                        }
                    ],
                }
            ],
        }
        async with run_gateway(cfg) as gw:
            app = gw.worker.app
            assert app is not None
            auth1 = [("authorization", "Bearer " + mint(claims(), k1, "RS256", kid="k1"))]
            assert (await http_get(gw.url + "/warm", headers=auth1))[0] == 200
            before, hits = app.fast_requests, srv.hits
            for i in range(3):
                assert (await http_get(f"{gw.url}/a{i}", headers=auth1))[0] == 200
            assert app.fast_requests - before == 3 and srv.hits == hits
            # the issuer rotates k2 in: the first k2 token fetches (parked meanwhile), then passes
            srv.keys = [public_jwk(k1, kid="k1"), public_jwk(k2, kid="k2", alg="RS256")]
            auth2 = [("authorization", "Bearer " + mint(claims(), k2, "RS256", kid="k2"))]
            status, _, body = await http_get(gw.url + "/b", headers=auth2)
            assert status == 200, body
            # fetched once; the request went on task-free from the fetch's callback
            assert srv.hits == hits + 1 and app.fast_requests - before == 4
            assert len([r for r in up.requests if r.path == "/b"]) == 1
            # an unknown kid that stays unknown is refused the same way
            auth3 = [("authorization", "Bearer " + mint(claims(), k2, "RS256", kid="k3"))]
            assert (await http_get(gw.url + "/c", headers=auth3))[0] == 401


async def test_key_ops_must_allow_verify() -> None:
    """RFC 7517 §4.3: a key whose key_ops lack "verify" (here: an encryption key without
    ``use``) never verifies a signature; keys allowing verify, or naming no key_ops, do."""
    srv = JwksServer()
    enc, ver, plain, sig_enc = rsa_key(), rsa_key(), rsa_key(), rsa_key()
    srv.keys = [
        {**public_jwk(enc, kid="enc"), "key_ops": ["encrypt"]},
        {**public_jwk(ver, kid="ver"), "key_ops": ["verify"]},
        public_jwk(plain, kid="plain"),
        {**public_jwk(sig_enc, kid="bad-ops"), "key_ops": "verify"},  # not a list
        {**public_jwk(rsa_key(), kid="use-enc"), "use": "enc"},
    ]
    assert [k.kid for k in parse_jwks(orjson.dumps({"keys": srv.keys}), frozenset({"RS256"}))] == [
        "ver",
        "plain",
    ]
    async with run_upstream(srv) as up:
        p = plugin(up.url + "/jwks")
        await p.start()
        try:
            await refused(p, ctx_for(mint(claims(iss="idp"), enc, "RS256", kid="enc")))
            await refused(p, ctx_for(mint(claims(iss="idp"), sig_enc, "RS256", kid="bad-ops")))
            for key, kid in ((ver, "ver"), (plain, "plain")):
                c = ctx_for(mint(claims(iss="idp"), key, "RS256", kid=kid))
                await p.on_request(c)
                assert c.consumer is not None
        finally:
            await p.aclose()
