"""jwt plugin behaviour: algorithms, claims, sources, consumers, identity headers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from portway.plugins.jwt.config import JwtConfig
from portway.plugins.jwt.plugin import JwtPlugin
from tests.identity_testing import make_context
from tests.plugins._identity.kit import (
    HS_SECRET,
    claims,
    ec_key,
    ed_key,
    mint,
    refused,
    rsa_key,
    www_authenticate,
)

Make = Callable[..., JwtPlugin]


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def accept(p: JwtPlugin, token: str, **ctx_kw: Any) -> Any:
    ctx = make_context(headers=ctx_kw.pop("headers", bearer(token)), **ctx_kw)
    assert await p.on_request(ctx) is None
    assert ctx.consumer is not None
    return ctx


async def test_consumer_credential_hs256(make_plugin: Make) -> None:
    tok = mint(claims(iss="alice-app", scope="read write"), HS_SECRET, "HS256")
    ctx = await accept(make_plugin(), tok)
    c = ctx.consumer
    assert c.username == "alice" and c.groups == {"admin"}
    assert c.scopes == {"read", "write"} and c.claims["iss"] == "alice-app"
    assert c.credential.startswith("jwt:")
    assert ctx.upstream_request.headers.get("x-consumer-username") == "alice"
    # jwt does not hide the token by default: upstreams may verify it again
    assert ctx.upstream_request.headers.get("authorization") == f"Bearer {tok}"


@pytest.mark.parametrize(
    ("iss", "alg", "key"),
    [
        ("rsa-idp", "RS256", rsa_key()),
        ("rsa-idp", "RS384", rsa_key()),
        ("rsa-idp", "RS512", rsa_key()),
        ("rsa-idp", "PS256", rsa_key()),
        ("rsa-idp", "PS384", rsa_key()),
        ("rsa-idp", "PS512", rsa_key()),
        ("ec-idp", "ES256", ec_key("P-256")),
        ("ec384-idp", "ES384", ec_key("P-384")),
        ("ed-idp", "EdDSA", ed_key()),
        ("hs-idp", "HS512", "h" * 64),
    ],
)
async def test_every_algorithm(make_plugin: Make, iss: str, alg: str, key: Any) -> None:
    ctx = await accept(make_plugin(), mint(claims(iss=iss, scp=["a", "b"]), key, alg))
    assert ctx.consumer.username == "user-1" and ctx.consumer.scopes == {"a", "b"}


async def test_key_bound_to_its_declared_algorithm(make_plugin: Make) -> None:
    # ec-idp accepts ES256 only; an ES384 token signed by a P-384 key must fail
    e = await refused(
        make_plugin(),
        make_context(headers=bearer(mint(claims(iss="ec-idp"), ec_key("P-384"), "ES384"))),
    )
    assert e.status == 401 and e.message == "invalid token"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (claims(iss="alice-app", exp=int(time.time()) - 120), "token expired"),
        (claims(iss="alice-app", nbf=int(time.time()) + 600), "invalid token"),
        (claims(iss="alice-app", iat=int(time.time()) + 600), "invalid token"),
        (claims(iss="alice-app", exp=None), "invalid token"),
        (claims(iss="alice-app", exp="tomorrow"), "invalid token"),
        (claims(iss="alice-app", exp=True), "invalid token"),
        (claims(iss="unknown-app"), "invalid token"),
        (claims(iss=None), "invalid token"),
        (claims(iss="alice-app", sub=5), "invalid token"),
    ],
)
async def test_claim_refusals(make_plugin: Make, payload: dict, message: str) -> None:
    e = await refused(
        make_plugin(), make_context(headers=bearer(mint(payload, HS_SECRET, "HS256")))
    )
    assert e.status == 401 and e.message == message
    (ch,) = www_authenticate(e)
    assert ch.startswith('Bearer realm="portway", error="invalid_token"')


async def test_leeway(make_plugin: Make) -> None:
    now = time.time()
    tok = mint(claims(iss="alice-app", exp=int(now) - 10), HS_SECRET, "HS256")
    await accept(make_plugin(clock=lambda: now, leeway=30), tok)
    await refused(make_plugin(clock=lambda: now, leeway=0), make_context(headers=bearer(tok)))


async def test_max_age(make_plugin: Make) -> None:
    now = time.time()
    tok = mint(claims(iss="alice-app", iat=int(now) - 3600), HS_SECRET, "HS256")
    e = await refused(make_plugin(max_age=60), make_context(headers=bearer(tok)))
    assert e.message == "token expired"


@pytest.mark.parametrize(
    ("aud", "ok"),
    [("api", True), (["x", "api"], True), ("other", False), (None, False), (5, False)],
)
async def test_audience(make_plugin: Make, aud: Any, ok: bool) -> None:
    tok = mint(claims(iss="alice-app", aud=aud), HS_SECRET, "HS256")
    p = make_plugin(audiences=["api"])
    if ok:
        await accept(p, tok)
    else:
        assert (await refused(p, make_context(headers=bearer(tok)))).status == 401


async def test_issuer_audience_override(make_plugin: Make) -> None:
    from tests.plugins.jwt.conftest import issuers

    iss = issuers()
    iss[4] = {**iss[4], "audiences": ["hs-api"]}
    p = make_plugin(issuers=iss, audiences=["api"])
    await accept(p, mint(claims(iss="hs-idp", aud="hs-api"), "h" * 64, "HS512"))
    await refused(
        p, make_context(headers=bearer(mint(claims(iss="hs-idp", aud="api"), "h" * 64, "HS512")))
    )


async def test_required_claims(make_plugin: Make) -> None:
    p = make_plugin(required_claims=["exp", "sub", "jti"])
    await refused(
        p, make_context(headers=bearer(mint(claims(iss="alice-app"), HS_SECRET, "HS256")))
    )
    await accept(p, mint(claims(iss="alice-app", jti="1"), HS_SECRET, "HS256"))


async def test_missing_token(make_plugin: Make) -> None:
    e = await refused(make_plugin(), make_context())
    assert e.message == "missing credentials"
    assert www_authenticate(e) == ['Bearer realm="portway"']


async def test_cookie_and_query_sources_and_hiding(make_plugin: Make) -> None:
    tok = mint(claims(iss="alice-app"), HS_SECRET, "HS256")
    p = make_plugin(header=None, cookie="session", query_param="jwt", hide_credentials=True)
    ctx = await accept(p, tok, headers=[("cookie", f"a=b; session={tok}")])
    assert ctx.upstream_request.headers.get("cookie") == "a=b"
    ctx = await accept(p, tok, headers=[], query=f"x=1&jwt={tok}".encode())
    assert ctx.upstream_request.query == b"x=1"
    # the Authorization header is not a source in this config
    await refused(p, make_context(headers=bearer(tok)))


async def test_two_different_tokens_refused(make_plugin: Make) -> None:
    t1 = mint(claims(iss="alice-app"), HS_SECRET, "HS256")
    t2 = mint(claims(iss="alice-app", jti="2"), HS_SECRET, "HS256")
    p = make_plugin(query_param="jwt")
    e = await refused(p, make_context(headers=bearer(t1), query=f"jwt={t2}".encode()))
    assert e.status == 401


async def test_consumer_claim_maps_issuer_tokens_to_consumers(make_plugin: Make) -> None:
    p = make_plugin(consumer_claim="sub")
    ctx = await accept(p, mint(claims(iss="hs-idp", sub="svc"), "h" * 64, "HS512"))
    assert ctx.consumer.id == "svc-id"
    ctx = await accept(p, mint(claims(iss="hs-idp", sub="svc-id"), "h" * 64, "HS512"))
    assert ctx.consumer.username == "svc"
    e = await refused(
        p, make_context(headers=bearer(mint(claims(iss="hs-idp", sub="x"), "h" * 64, "HS512")))
    )
    assert e.status == 401


async def test_groups_claim(make_plugin: Make) -> None:
    p = make_plugin(groups_claim="realm_access.roles")
    tok = mint(claims(iss="hs-idp", realm_access={"roles": ["ops", 3]}), "h" * 64, "HS512")
    ctx = await accept(p, tok)
    assert ctx.consumer.groups == {"ops"}


async def test_spoofed_identity_headers_are_removed_even_on_failure(make_plugin: Make) -> None:
    ctx = make_context(headers=[("x-consumer-id", "admin"), ("X-Consumer-Groups", "admin")])
    await refused(make_plugin(), ctx)
    assert "x-consumer-id" not in ctx.upstream_request.headers
    tok = mint(claims(iss="hs-idp"), "h" * 64, "HS512")
    ctx = await accept(make_plugin(), tok, headers=[*bearer(tok), ("x-consumer-groups", "root")])
    assert ctx.upstream_request.headers.get_all("x-consumer-groups") == []


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JwtConfig.model_validate({"issuers": [{"issuer": "x"}]})
    with pytest.raises(ValueError, match="unsupported algorithm"):
        JwtConfig.model_validate({"algorithms": ["none"]})
    with pytest.raises(ValueError, match="HS256"):
        JwtConfig.model_validate({"issuers": [{"issuer": "x", "secret": "x" * 64}]})
    with pytest.raises(ValueError, match="duplicate"):
        JwtConfig.model_validate(
            {
                "issuers": [
                    {"issuer": "x", "jwks_url": "http://a/"},
                    {"issuer": "x", "jwks_url": "http://b/"},
                ]
            }
        )
