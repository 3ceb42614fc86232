"""auth combinator: any/all, bare and full member forms, anonymous, challenges."""

from __future__ import annotations

from typing import Any

import pytest

from portway.plugins.auth.config import AuthConfig
from portway.plugins.auth.plugin import AuthPlugin
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import HS_SECRET, claims, mint, refused, www_authenticate

CONSUMERS = [
    {
        "username": "alice",
        "groups": ["a"],
        "credentials": {
            "key_auth": [{"key": "alice-key"}],
            "jwt": [{"issuer": "alice-app", "secret": HS_SECRET}],
            "mtls": [{"subject": "CN=alice"}],
        },
    },
    {"username": "bob", "groups": ["b"], "credentials": {"key_auth": [{"key": "bob-key"}]}},
    {"username": "guest"},
]
ALICE_CERT = {"subject": ((("commonName", "alice"),),)}


def plugin(cfg: dict[str, Any]) -> AuthPlugin:
    return AuthPlugin(AuthConfig.model_validate(cfg), make_env(CONSUMERS))


def tok(**extra: Any) -> str:
    return mint(claims(iss="alice-app", **extra), HS_SECRET, "HS256")


ANY = {"any": ["jwt", {"name": "key_auth", "config": {"headers": ["x-key"], "query_params": []}}]}


async def test_any_first_success_wins() -> None:
    p = plugin(ANY)
    ctx = make_context(headers=[("x-key", "bob-key")])
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "bob"
    assert "x-key" not in ctx.upstream_request.headers  # key_auth hides by default
    ctx = make_context(headers=[("authorization", f"Bearer {tok(scope='s')}")])
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.scopes == {"s"}


async def test_any_bad_jwt_then_good_key() -> None:
    ctx = make_context(headers=[("authorization", "Bearer x.y.z"), ("x-key", "alice-key")])
    await plugin(ANY).on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "alice"


async def test_any_nothing_presented_lists_every_scheme() -> None:
    e = await refused(plugin(ANY), make_context(headers=[("x-consumer-id", "spoof")]))
    assert e.status == 401 and e.message == "missing credentials"
    assert www_authenticate(e) == ['Bearer realm="portway"', 'Key realm="portway"']


async def test_any_wrong_credentials() -> None:
    e = await refused(plugin(ANY), make_context(headers=[("x-key", "nope")]))
    assert e.status == 401 and e.message == "invalid credentials"
    assert len(www_authenticate(e)) == 2


async def test_any_expired_token_message_survives() -> None:
    import time

    expired = tok(exp=int(time.time()) - 100)
    e = await refused(plugin(ANY), make_context(headers=[("authorization", f"Bearer {expired}")]))
    assert e.message == "token expired"
    assert 'error="invalid_token"' in www_authenticate(e)[0]


async def test_anonymous_only_without_any_credential() -> None:
    p = plugin({**ANY, "anonymous": "guest"})
    ctx = make_context()
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.anonymous and ctx.consumer.username == "guest"
    assert (await refused(p, make_context(headers=[("x-key", "wrong")]))).status == 401


async def test_all_requires_every_method_and_one_identity() -> None:
    p = plugin({"all": ["mtls_auth", "key_auth"]})
    ctx = make_context(headers=[("apikey", "alice-key")])
    ctx.extra["peercert"] = ALICE_CERT
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "alice"
    # certificate only
    only_cert = make_context()
    only_cert.extra["peercert"] = ALICE_CERT
    e = await refused(p, only_cert)
    assert e.status == 401 and www_authenticate(e) == ['Key realm="portway"']
    # Alice's certificate with Bob's key
    mixed = make_context(headers=[("apikey", "bob-key")])
    mixed.extra["peercert"] = ALICE_CERT
    assert (await refused(p, mixed)).status == 401


async def test_all_merges_claims_and_scopes() -> None:
    p = plugin({"all": ["key_auth", "jwt"]})
    ctx = make_context(
        headers=[("apikey", "alice-key"), ("authorization", f"Bearer {tok(scope='x y')}")]
    )
    await p.on_request(ctx)
    c = ctx.consumer
    assert c is not None and c.username == "alice" and c.scopes == {"x", "y"}
    assert c.credential is not None and c.credential.startswith("key_auth:")


async def test_all_anonymous_when_nothing_presented() -> None:
    p = plugin({"all": ["key_auth", "jwt"], "anonymous": "guest"})
    ctx = make_context()
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.anonymous


async def test_member_errors_other_than_401_propagate_when_nothing_succeeds() -> None:
    from tests.helpers import free_port

    intro = {
        "name": "oauth2_introspection",
        "config": {
            "endpoint": f"http://127.0.0.1:{free_port()}/",
            "client_id": "a",
            "client_secret": "b",
            "timeout": 0.2,
        },
    }
    p = plugin({"any": [intro, "key_auth"]})
    e = await refused(p, make_context(headers=[("authorization", "Bearer opaque")]))
    assert e.status == 503
    ctx = make_context(headers=[("authorization", "Bearer opaque"), ("apikey", "bob-key")])
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "bob"


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"any": ["jwt"], "all": ["jwt"]},
        {"any": []},
        {"any": ["acl"]},
        {"any": ["auth"]},
        {"any": [{"name": "key_auth", "config": {"nope": 1}}]},
        {"any": [{"name": "jwt", "config": {"algorithms": ["none"]}}]},
        {"any": ["jwt"], "extra": 1},
    ],
)
def test_invalid_configs(cfg: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AuthConfig.model_validate(cfg)


def test_unknown_anonymous() -> None:
    with pytest.raises(ValueError, match="not defined"):
        plugin({"any": ["jwt"], "anonymous": "nobody"})
