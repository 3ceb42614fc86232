"""The verified-token cache (plugins/jwt/cache.py): a token seen again is not verified again,
but its time claims are, a JWKS rotation re-verifies it, and the cache stays bounded."""

from __future__ import annotations

from typing import Any

from portway.plugins.jwt import cache as token_cache
from portway.plugins.jwt.config import JwtConfig
from portway.plugins.jwt.plugin import JwtPlugin
from tests.helpers import run_upstream
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import mint, public_jwk, refused, rsa_key
from tests.plugins.jwt.test_jwks import JwksServer

SECRET = "cache-test-secret-of-32-bytes-at-least"
T0 = 1_900_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def hs_plugin(clock: Clock, **cfg: Any) -> JwtPlugin:
    conf = {
        "issuers": [{"issuer": "idp", "algorithms": ["HS256"], "secret": SECRET}],
        "leeway": 10,
        **cfg,
    }
    return JwtPlugin(JwtConfig.model_validate(conf), make_env(), clock=clock)


def token(**claims: Any) -> str:
    body = {"iss": "idp", "sub": "user-1", "iat": int(T0), "exp": int(T0) + 100, **claims}
    return mint({k: v for k, v in body.items() if v is not None}, SECRET, "HS256")


async def accepted(p: JwtPlugin, tok: str) -> Any:
    ctx = make_context(headers=[("authorization", f"Bearer {tok}")])
    assert await p.on_request(ctx) is None
    assert ctx.consumer is not None
    return ctx.consumer


async def test_a_kept_token_skips_the_signature_check_and_keeps_its_consumer() -> None:
    p = hs_plugin(Clock())
    tok = token()
    ctx = make_context(headers=[("authorization", f"Bearer {tok}"), ("x-consumer-id", "forged")])
    assert await p.on_request(ctx) is None
    first = ctx.consumer
    fields = [kv for kv in ctx.upstream_request.headers.raw() if kv[0].startswith(b"x-")]
    assert (b"x-consumer-id", b"user-1") in fields and (b"x-consumer-id", b"forged") not in fields
    assert len(p._cache) == 1
    # a hit sends the same identity fields (kept with the entry), the forged one stripped
    ctx = make_context(headers=[("authorization", f"Bearer {tok}"), ("x-consumer-id", "forged")])
    assert await p.on_request(ctx) is None
    assert ctx.consumer is first
    assert [kv for kv in ctx.upstream_request.headers.raw() if kv[0].startswith(b"x-")] == fields
    # with the issuer's keys gone, only a kept token can still pass: proof of the hit
    p._issuers["idp"].keys = []
    assert await accepted(p, tok) is first
    e = await refused(p, make_context(headers=[("authorization", f"Bearer {token(sub='x')}")]))
    assert e.status == 401
    assert len(p._cache) == 1


async def test_exp_is_checked_again_with_the_leeway() -> None:
    clock = Clock()
    p = hs_plugin(clock)
    tok = token()
    await accepted(p, tok)
    clock.now = T0 + 100 + 10 - 0.001  # exp + leeway not reached yet
    await accepted(p, tok)
    assert len(p._cache) == 1
    clock.now = T0 + 100 + 10  # now >= exp + leeway: expired, and dropped from the cache
    e = await refused(p, make_context(headers=[("authorization", f"Bearer {tok}")]))
    assert e.message == "token expired"
    assert len(p._cache) == 0


async def test_max_age_is_checked_again() -> None:
    clock = Clock()
    p = hs_plugin(clock, max_age=30)
    tok = token()
    await accepted(p, tok)
    clock.now = T0 + 40  # now - iat == max_age + leeway: still valid
    await accepted(p, tok)
    clock.now = T0 + 40.5
    e = await refused(p, make_context(headers=[("authorization", f"Bearer {tok}")]))
    assert e.message == "token expired"


async def test_a_token_not_yet_valid_is_never_kept() -> None:
    clock = Clock()
    p = hs_plugin(clock)
    tok = token(nbf=int(T0) + 50)
    await refused(p, make_context(headers=[("authorization", f"Bearer {tok}")]))
    assert len(p._cache) == 0
    clock.now = T0 + 41  # nbf - leeway < now
    await accepted(p, tok)
    assert len(p._cache) == 1


async def test_the_cache_is_bounded_and_long_tokens_are_not_kept() -> None:
    p = hs_plugin(Clock())
    n = token_cache.MAX_ENTRIES
    toks = [token(jti=f"t{i}") for i in range(n + 5)]
    for t in toks:
        await accepted(p, t)
    assert len(p._cache) == n
    # the oldest went first: the first token is verified again (and kept again)
    p._issuers["idp"].keys = []
    await refused(p, make_context(headers=[("authorization", f"Bearer {toks[0]}")]))
    await accepted(p, toks[-1])
    long_tok = token(pad="x" * token_cache.MAX_TOKEN_CHARS)
    p2 = hs_plugin(Clock())
    await accepted(p2, long_tok)
    assert len(p2._cache) == 0


async def test_a_jwks_rotation_verifies_kept_tokens_again() -> None:
    srv = JwksServer()
    k1, k2 = rsa_key(), rsa_key()
    srv.keys = [public_jwk(k1, kid="k1", alg="RS256")]
    async with run_upstream(srv) as up:
        conf = {"issuers": [{"issuer": "idp", "algorithms": ["RS256"], "jwks_url": up.url}]}
        p = JwtPlugin(JwtConfig.model_validate(conf), make_env())
        await p.start()
        try:
            import time

            now = int(time.time())
            claims = {"iss": "idp", "sub": "u", "iat": now, "exp": now + 300}
            tok = mint(claims, k1, "RS256", kid="k1")
            await accepted(p, tok)
            jwks = p.jwks("idp")
            assert jwks is not None
            version = jwks.version
            # the same document again: same version, the token stays kept
            assert await jwks.refresh()
            assert jwks.version == version and len(p._cache) == 1
            # k1 is rotated out: the kept token is verified again, and refused
            srv.keys = [public_jwk(k2, kid="k2", alg="RS256")]
            assert await jwks.refresh()
            assert jwks.version == version + 1
            await refused(p, make_context(headers=[("authorization", f"Bearer {tok}")]))
            assert len(p._cache) == 0
        finally:
            await p.aclose()


def _chain_ctx(tok: str) -> Any:
    return make_context(
        headers=[("authorization", f"Bearer {tok}"), ("x-consumer-id", "forged"), ("x-a", "1")]
    )


async def test_the_plain_call_hooks_answer_like_the_coroutine() -> None:
    """The chain's task-free runner uses ``fast_hooks`` (a kept token) and the plugin's own
    ``on_request`` otherwise: the upstream request and the consumer come out the same."""
    from portway.errors import GatewayError
    from portway.pipeline.runner import Chain

    for hide in (False, True):
        p = hs_plugin(Clock(), hide_credentials=hide)
        assert p.fast_hooks is not None
        chain = Chain([p])
        tok = token()
        ref = _chain_ctx(tok)
        assert await p.on_request(ref) is None  # the coroutine path (and now kept)
        for _ in range(2):  # a hit through the hooks, twice
            ctx = _chain_ctx(tok)
            assert chain.run_request_sync(ctx) is None
            assert ctx.consumer is ref.consumer
            assert ctx.upstream_request.headers.raw() == ref.upstream_request.headers.raw()
        # a token never seen: verified by the plugin's own code, driven from the hooks
        other = token(sub="user-2")
        ctx = _chain_ctx(other)
        assert chain.run_request_sync(ctx) is None
        assert ctx.consumer is not None and ctx.consumer.id == "user-2"
        # refusals are the plugin's own
        bad = _chain_ctx(token(exp=int(T0) - 100))
        try:
            chain.run_request_sync(bad)
        except GatewayError as e:
            assert e.status == 401 and e.message == "token expired"
        else:
            raise AssertionError("an expired token passed")
    # other token sources and anonymous fallbacks keep the coroutine hooks
    assert hs_plugin(Clock(), cookie="tok").fast_hooks is None
