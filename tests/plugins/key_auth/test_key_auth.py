"""key_auth: lookup by digest, sources, hiding, spoofed identity headers."""

from __future__ import annotations

import pytest

from portway.errors import GatewayError
from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import RequestContext
from portway.plugins.key_auth.config import KeyAuthConfig
from portway.plugins.key_auth.plugin import KeyAuthPlugin
from tests.helpers import ServingPath
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import refused, www_authenticate

CONSUMERS = [
    {"username": "alice", "groups": ["admin"], "credentials": {"key_auth": [{"key": "alice-key"}]}},
    {"username": "guest"},
]


def plugin(**cfg: object) -> KeyAuthPlugin:
    return KeyAuthPlugin(KeyAuthConfig.model_validate(cfg), make_env(CONSUMERS))


async def test_valid_key_in_header_sets_consumer_and_headers() -> None:
    p = plugin()
    ctx = make_context(headers=[("apikey", "alice-key"), ("x-consumer-username", "root")])
    assert await p.on_request(ctx) is None
    assert ctx.consumer is not None and ctx.consumer.username == "alice"
    assert ctx.consumer.credential is not None and "alice-key" not in ctx.consumer.credential
    up = ctx.upstream_request.headers
    assert up.get_all("x-consumer-username") == ["alice"]
    assert up.get("x-consumer-groups") == "admin"
    assert "apikey" not in up  # hide_credentials defaults to true
    assert ctx.request.headers.get("apikey") == "alice-key"  # the client's request is untouched


async def test_key_in_query_is_hidden_byte_exact() -> None:
    p = plugin()
    ctx = make_context(query=b"a=1&apikey=alice-key&b=%2F")
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "alice"
    assert ctx.upstream_request.query == b"a=1&b=%2F"


async def test_percent_encoded_key_in_query() -> None:
    ctx = make_context(query=b"apikey=alice%2Dkey")
    await plugin().on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "alice"


async def test_hide_credentials_false_keeps_key() -> None:
    ctx = make_context(headers=[("x-api-key", "alice-key")])
    await plugin(hide_credentials=False).on_request(ctx)
    assert ctx.upstream_request.headers.get("x-api-key") == "alice-key"


async def test_unknown_and_wrong_keys_answer_identically() -> None:
    p = plugin()
    e1 = await refused(p, make_context(headers=[("apikey", "nobody")]))
    e2 = await refused(p, make_context(headers=[("apikey", "alice-kez")]))
    assert (e1.status, e1.message, e1.headers) == (e2.status, e2.message, e2.headers)
    assert e1.status == 401 and www_authenticate(e1) == ['Key realm="portway"']


async def test_missing_key() -> None:
    e = await refused(plugin(), make_context())
    assert e.status == 401 and e.message == "missing credentials"
    assert www_authenticate(e) == ['Key realm="portway"']


async def test_two_different_keys_refused() -> None:
    ctx = make_context(headers=[("apikey", "alice-key")], query=b"apikey=other")
    e = await refused(plugin(), ctx)
    assert e.status == 401


async def test_same_key_twice_is_fine() -> None:
    ctx = make_context(headers=[("apikey", "alice-key"), ("x-api-key", "alice-key")])
    await plugin().on_request(ctx)
    assert ctx.consumer is not None


async def test_query_disabled() -> None:
    e = await refused(plugin(query_params=[]), make_context(query=b"apikey=alice-key"))
    assert e.message == "missing credentials"


async def test_oversized_key_refused() -> None:
    e = await refused(plugin(), make_context(headers=[("apikey", "k" * 5000)]))
    assert e.status == 401


async def test_anonymous_only_when_no_key() -> None:
    p = plugin(anonymous="guest")
    ctx = make_context(headers=[("x-anonymous-consumer", "false")])
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.anonymous
    assert ctx.consumer.username == "guest"
    assert ctx.upstream_request.headers.get_all("x-anonymous-consumer") == ["true"]
    e = await refused(p, make_context(headers=[("apikey", "wrong")]))
    assert e.status == 401


def test_unknown_anonymous_consumer_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not defined"):
        plugin(anonymous="nobody")


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError):
        KeyAuthConfig.model_validate({"header": "x"})


async def test_credential_identifier_cannot_be_tested_offline() -> None:
    """X-Credential-Identifier names the consumer's key, not the key: it is not a function of
    the key (whoever sees it cannot check guessed keys), and every worker or instance built
    from the same config computes the same one (shared rate-limit keys rely on it)."""
    from portway.plugins._identity.hashing import credential_id, sha256_hex
    from tests.helpers import run_gateway, run_upstream

    ctx = make_context(headers=[("apikey", "alice-key")])
    await plugin().on_request(ctx)
    assert ctx.consumer is not None
    cred = ctx.consumer.credential
    assert cred is not None and cred.startswith("key_auth:")
    assert cred != credential_id("key_auth", sha256_hex("alice-key"))
    assert cred != credential_id("key_auth", "alice-key")
    # a second, independent build (another worker) names it the same
    ctx2 = make_context(headers=[("apikey", "alice-key")])
    await plugin().on_request(ctx2)
    assert ctx2.consumer is not None and ctx2.consumer.credential == cred
    # the same key held by another consumer gets another identifier
    other = KeyAuthPlugin(
        KeyAuthConfig.model_validate({}),
        make_env([{"username": "bob", "credentials": {"key_auth": [{"key": "alice-key"}]}}]),
    )
    ctx3 = make_context(headers=[("apikey", "alice-key")])
    await other.on_request(ctx3)
    assert ctx3.consumer is not None and ctx3.consumer.credential != cred
    # what reaches the upstream, on the general path (cold pool) and the task-free path
    async with run_upstream() as up:
        cfg = {
            "upstreams": {"u": {"targets": [{"url": up.url}]}},
            "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}],
            "consumers": CONSUMERS,
            "plugins": [{"name": "key_auth"}],
        }
        async with run_gateway(cfg) as gw:
            from tests.helpers import http_get

            for _ in range(2):
                status, _, _ = await http_get(gw.url + "/x", headers=[("apikey", "alice-key")])
                assert status == 200
            sent = [r.headers.get("x-credential-identifier") for r in up.requests]
            assert sent == [cred, cred]


async def test_through_the_gateway_on_both_paths(path: ServingPath) -> None:
    """A known key reaches the upstream as the consumer's identity (the key hidden, spoofed
    identity fields dropped); no key or a wrong one is refused by the plugin itself."""
    from tests.helpers import http_get, run_gateway, run_upstream, simple_config

    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[{"name": "key_auth"}])
        cfg["consumers"] = CONSUMERS
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            warmed = len(up.requests)
            ok = await http_get(
                gw.url + "/x", headers=[("apikey", "alice-key"), ("x-consumer-username", "root")]
            )
            missing = await http_get(gw.url + "/x")
            wrong = await http_get(gw.url + "/x", headers=[("apikey", "nope")])
            path.assert_served(3, local=2)
        sent = up.requests[warmed:]
    assert ok[0] == 200 and missing[0] == 401 and wrong[0] == 401
    assert missing[1].get("www-authenticate") is not None
    assert len(sent) == 1
    h = sent[0].headers
    assert h.get_all("x-consumer-username") == ["alice"]
    assert h.get("x-consumer-groups") == "admin"
    assert h.get("apikey") is None


@pytest.mark.parametrize(
    ("cfg", "headers", "query"),
    [
        ({}, [("apikey", "alice-key"), ("x-consumer-id", "forged")], b""),
        ({}, [], b"a=1&apikey=alice-key&b=2"),
        ({"hide_credentials": False}, [("x-api-key", " alice-key ")], b""),
        ({"anonymous": "guest"}, [("x-consumer-username", "root")], b""),
        ({}, [("apikey", "alice-key"), ("apikey", "alice-key")], b""),
        # a query without the key parameter, one naming it percent-encoded, one with "+"
        ({}, [("apikey", "alice-key")], b"id=7"),
        ({}, [("apikey", "alice-key")], b"ap%69key=alice-key&id=7"),
        ({}, [("apikey", "alice-key")], b"api+key=1&apikeys=2"),
    ],
)
async def test_the_plain_call_hooks_do_what_on_request_does(
    cfg: dict[str, object], headers: list[tuple[str, str]], query: bytes
) -> None:
    """The task-free runner calls ``fast_hooks.request``; the task path ``on_request``:
    the same consumer, the same upstream request, for every case, twice (the second time
    from the cache of accepted keys)."""
    p = plugin(**cfg)
    assert p.fast_hooks is not None
    for _ in range(2):
        a = make_context(headers=headers, query=query)
        b = make_context(headers=headers, query=query)
        assert await p.on_request(a) is None
        assert p.fast_hooks.request(b) is None
        assert a.consumer is b.consumer and a.consumer is not None
        assert a.upstream_request.headers.raw() == b.upstream_request.headers.raw()
        assert a.upstream_request.query == b.upstream_request.query


@pytest.mark.parametrize(
    "headers",
    [[], [("apikey", "wrong")], [("apikey", "alice-key"), ("apikey", "other")]],
)
async def test_the_plain_call_hooks_refuse_alike(headers: list[tuple[str, str]]) -> None:
    from portway.errors import GatewayError

    p = plugin()
    assert p.fast_hooks is not None
    e1 = await refused(p, make_context(headers=headers))
    with pytest.raises(GatewayError) as e2:
        p.fast_hooks.request(make_context(headers=headers))
    assert (e1.status, e1.message, e1.headers) == (
        e2.value.status,
        e2.value.message,
        e2.value.headers,
    )


def test_a_subclass_keeps_the_coroutine_hooks() -> None:
    class Custom(KeyAuthPlugin):
        pass

    p = Custom(KeyAuthConfig.model_validate({}), make_env(CONSUMERS))
    assert p.fast_hooks is None


def shared_context(headers: list[tuple[str, str]], query: bytes = b"") -> RequestContext:
    """A context as the task-free path makes it for a chain of copy-on-edit plugins: the
    upstream request is the client's own until a hook edits it."""
    req = Request(
        method="GET",
        path="/",
        query=query,
        headers=Headers.from_pairs(headers),
        host="gateway.test",
        client_ip="127.0.0.1",
    )
    return RequestContext(req, copy=False)


@pytest.mark.parametrize("hide", [True, False])
def test_the_hooks_copy_the_shared_request_before_editing(hide: bool) -> None:
    p = plugin(hide_credentials=hide, query_params=["apikey"])
    assert p.copies_on_edit
    sent = [("accept", "*/*"), ("apikey", "alice-key"), ("x-consumer-id", "spoofed"), ("b", "2")]
    ctx = shared_context(sent, query=b"apikey=alice-key&a=1")
    before = list(ctx.request.headers.raw())
    assert p.fast_hooks is not None and p.fast_hooks.request(ctx) is None
    assert ctx.upstream_request is not ctx.request
    assert ctx.request.headers.raw() == before  # the client's request is untouched
    assert ctx.request.query == b"apikey=alice-key&a=1"
    # what the in-place flow on a copy gives (the general path's)
    ref = make_context(headers=sent, query=b"apikey=alice-key&a=1")
    assert p.fast_hooks.request(ref) is None
    assert ctx.upstream_request.headers.raw() == ref.upstream_request.headers.raw()
    assert ctx.upstream_request.query == ref.upstream_request.query
    names = [k for k, _ in ctx.upstream_request.headers.raw()]
    assert (b"apikey" in names) is not hide and names.count(b"x-consumer-id") == 1
    assert ctx.consumer is not None and ctx.consumer.username == "alice"


def test_a_query_without_the_key_keeps_the_request_shared() -> None:
    """``?id=7`` cannot hold the key: no copy of the request, the accepted-key memo used."""
    p = plugin(query_params=["apikey"])
    assert p.fast_hooks is not None
    for _ in range(2):
        ctx = shared_context([("apikey", "alice-key"), ("x-consumer-id", "x")], query=b"id=7")
        assert p.fast_hooks.request(ctx) is None
        assert ctx.upstream_unedited is ctx.request  # an edit recorded, nothing copied
        assert ctx.consumer is not None and ctx.consumer.username == "alice"
        names = [k for k, _ in ctx.upstream_request.headers.raw()]
        assert b"apikey" not in names and names.count(b"x-consumer-id") == 1
        assert ctx.upstream_request.query == b"id=7"


@pytest.mark.parametrize("query", [b"ap%69key=bob-key", b"apikey=bob-key", b"x=1&apikey=bob-key"])
def test_a_second_key_in_the_query_is_refused_after_the_memo_knows_the_first(
    query: bytes,
) -> None:
    p = plugin(query_params=["apikey"])
    assert p.fast_hooks is not None
    assert p.fast_hooks.request(make_context(headers=[("apikey", "alice-key")])) is None
    with pytest.raises(GatewayError) as e:
        p.fast_hooks.request(make_context(headers=[("apikey", "alice-key")], query=query))
    assert e.value.status == 401


def test_a_refused_key_leaves_the_shared_request_alone() -> None:
    p = plugin()
    ctx = shared_context([("apikey", "nobody")])
    assert p.fast_hooks is not None
    with pytest.raises(GatewayError):
        p.fast_hooks.request(ctx)
    assert ctx.upstream_request is ctx.request


def test_a_subclass_gets_the_copy_before_the_hooks() -> None:
    class Custom(KeyAuthPlugin):
        pass

    assert KeyAuthPlugin.copies_on_edit and not Custom.copies_on_edit
