from __future__ import annotations

import asyncio

import pytest

from portway.errors import GatewayError
from portway.http.models import Request
from portway.plugins.cache.registry import registry
from tests.plugins.cache.harness import Clock, Upstream, fixed, make_plugin, run


async def test_fresh_response_is_served_from_cache_with_age() -> None:
    clock = Clock()
    p = make_plugin(clock)
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60"), ("Date", clock.date())]))
    first = await run(p, up)
    assert first.h("x-cache") == "MISS" and first.body == b"hello world"
    clock.t += 10
    second = await run(p, up)
    assert up.calls == 1
    assert second.h("x-cache") == "HIT"
    assert second.body == b"hello world"
    assert second.h("age") == "10"
    assert second.h("date") == clock.date(-10)  # Date is never rewritten
    assert p.counters.hit == 1 and p.counters.miss == 1


async def test_upstream_age_and_date_feed_the_age_header() -> None:
    clock = Clock()
    p = make_plugin(clock)
    up = Upstream(
        fixed(headers=[("Cache-Control", "max-age=600"), ("Date", clock.date()), ("Age", "30")])
    )
    await run(p, up)
    clock.t += 3
    assert (await run(p, up)).h("age") == "33"


async def test_stale_response_is_refetched() -> None:
    clock = Clock()
    p = make_plugin(clock)
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=5"), ("Date", clock.date())]))
    await run(p, up)
    clock.t += 6
    r = await run(p, up)
    assert up.calls == 2 and r.h("x-cache") == "MISS"


async def test_head_is_answered_from_stored_get() -> None:
    p = make_plugin()
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
    await run(p, up)
    r = await run(p, up, method="HEAD")
    assert up.calls == 1 and r.h("x-cache") == "HIT"


async def test_query_is_part_of_the_key_and_can_be_normalised() -> None:
    p = make_plugin()
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
    await run(p, up, query=b"a=1&b=2")
    await run(p, up, query=b"b=2&a=1")
    assert up.calls == 2
    q = make_plugin(route="r2", key=["host", "path", {"query": {"sort": True, "exclude": ["utm"]}}])
    await run(q, up, query=b"a=1&b=2&utm=x")
    r = await run(q, up, query=b"b=2&a=1")
    assert r.h("x-cache") == "HIT" and up.calls == 3


@pytest.mark.parametrize("cc", ["no-store", "private", "max-age=60, no-store", "max-age=0"])
async def test_uncacheable_responses_go_upstream_every_time(cc: str) -> None:
    p = make_plugin()
    up = Upstream(fixed(headers=[("Cache-Control", cc)]))
    await run(p, up)
    await run(p, up)
    assert up.calls == 2


async def test_set_cookie_not_stored_by_default_but_configurable() -> None:
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")]))
    p = make_plugin()
    await run(p, up)
    await run(p, up)
    assert up.calls == 2
    q = make_plugin(store_set_cookie=True)
    await run(q, up)
    assert (await run(q, up)).h("set-cookie") == "a=b"
    assert up.calls == 3


async def test_authorization_requires_public_or_s_maxage() -> None:
    auth = [("Authorization", "Bearer t")]
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
    p = make_plugin()
    await run(p, up, headers=auth)
    await run(p, up, headers=auth)
    assert up.calls == 2
    up2 = Upstream(fixed(headers=[("Cache-Control", "s-maxage=60")]))
    q = make_plugin(route="r2")
    await run(q, up2, headers=auth)
    assert (await run(q, up2, headers=auth)).h("x-cache") == "HIT"


async def test_vary_selects_variants_and_vary_star_is_never_served() -> None:
    async def reply(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        lang = req.headers.get("accept-language") or "none"
        return 200, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")], lang.encode()

    p = make_plugin()
    up = Upstream(reply)
    assert (await run(p, up, headers=[("Accept-Language", "en")])).body == b"en"
    assert (await run(p, up, headers=[("Accept-Language", "fr")])).body == b"fr"
    en = await run(p, up, headers=[("Accept-Language", "en")])
    assert en.body == b"en" and en.h("x-cache") == "HIT"
    assert (await run(p, up)).body == b"none"
    assert up.calls == 3
    star = Upstream(fixed(headers=[("Cache-Control", "max-age=60"), ("Vary", "*")]))
    q = make_plugin(route="r2")
    await run(q, star)
    await run(q, star)
    assert star.calls == 2


async def test_config_vary_headers_split_variants() -> None:
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
    p = make_plugin()  # vary_headers defaults to accept-encoding
    await run(p, up, headers=[("Accept-Encoding", "gzip")])
    await run(p, up, headers=[("Accept-Encoding", "br")])
    assert up.calls == 2
    assert (await run(p, up, headers=[("Accept-Encoding", "gzip")])).h("x-cache") == "HIT"


async def test_revalidation_with_etag_merges_304_headers() -> None:
    clock = Clock()
    p = make_plugin(clock)
    state = {"n": 0}

    async def reply(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        state["n"] += 1
        if state["n"] == 1:
            return (
                200,
                [
                    ("Cache-Control", "max-age=1"),
                    ("ETag", '"v1"'),
                    ("Test-Header", "A"),
                    ("Date", clock.date()),
                ],
                b"body-1",
            )
        assert req.headers.get("if-none-match") == '"v1"'
        return (
            304,
            [
                ("Cache-Control", "max-age=3600"),
                ("ETag", '"v1"'),
                ("Test-Header", "B"),
                ("Date", clock.date()),
            ],
            b"",
        )

    up = Upstream(reply)
    await run(p, up)
    clock.t += 5
    r = await run(p, up)
    assert r.status == 200 and r.body == b"body-1"
    assert r.h("x-cache") == "REVALIDATED" and r.h("test-header") == "B"
    clock.t += 5
    r = await run(p, up)
    assert r.h("x-cache") == "HIT" and r.h("test-header") == "B" and r.h("age") == "5"
    assert up.calls == 2


async def test_revalidation_with_last_modified() -> None:
    clock = Clock()
    p = make_plugin(clock)
    lm = clock.date(-86400)

    async def reply(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        if req.headers.get("if-modified-since") == lm:
            return 304, [("Cache-Control", "max-age=60")], b""
        return 200, [("Cache-Control", "max-age=1"), ("Last-Modified", lm), ("X", "1")], b"lm-body"

    up = Upstream(reply)
    await run(p, up)
    clock.t += 2
    r = await run(p, up)
    assert r.h("x-cache") == "REVALIDATED" and r.body == b"lm-body" and r.h("x") == "1"


async def test_client_conditionals_answered_from_fresh_entry() -> None:
    p = make_plugin()
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60"), ("ETag", '"e"')]))
    await run(p, up)
    r = await run(p, up, headers=[("If-None-Match", '"e"')])
    assert r.status == 304 and r.body == b"" and r.h("etag") == '"e"'
    r = await run(p, up, headers=[("If-None-Match", '"other"')])
    assert r.status == 200 and r.body == b"hello world"
    assert up.calls == 1


async def test_request_no_cache_forces_validation_and_no_store_prevents_storing() -> None:
    p = make_plugin()
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
    await run(p, up)
    await run(p, up, headers=[("Cache-Control", "no-cache")])
    await run(p, up, headers=[("Pragma", "no-cache")])
    assert up.calls == 3
    q = make_plugin(route="r2")
    await run(q, up, headers=[("Cache-Control", "no-store")])
    await run(q, up)
    assert up.calls == 5


async def test_request_max_age_min_fresh_and_max_stale() -> None:
    clock = Clock()
    p = make_plugin(clock)
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=100")]))
    await run(p, up)
    clock.t += 50
    assert (await run(p, up, headers=[("Cache-Control", "max-age=60")])).h("x-cache") == "HIT"
    assert (await run(p, up, headers=[("Cache-Control", "min-fresh=10")])).h("x-cache") == "HIT"
    assert up.calls == 1
    await run(p, up, headers=[("Cache-Control", "max-age=10")])
    assert up.calls == 2
    clock.t += 120  # stale by 20 s
    r = await run(p, up, headers=[("Cache-Control", "max-stale=30")])
    assert r.h("x-cache") == "STALE" and up.calls == 2


async def test_only_if_cached_gives_504_on_miss() -> None:
    p = make_plugin()
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
    r = await run(p, up, headers=[("Cache-Control", "only-if-cached")])
    assert r.status == 504 and up.calls == 0
    await run(p, up)
    r = await run(p, up, headers=[("Cache-Control", "only-if-cached")])
    assert r.status == 200 and r.h("x-cache") == "HIT"


async def test_unsafe_methods_invalidate_url_and_same_origin_locations() -> None:
    p = make_plugin()
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
    for path in ("/r", "/other", "/cl"):
        await run(p, up, path=path)
    post = Upstream(
        fixed(201, [("Location", "/other"), ("Content-Location", "http://example.com/cl")])
    )
    await run(p, post, method="POST")
    for path in ("/r", "/other", "/cl"):
        assert (await run(p, up, path=path)).h("x-cache") == "MISS"
    failed = Upstream(fixed(500))
    await run(p, failed, method="DELETE")
    assert (await run(p, up)).h("x-cache") == "HIT"
    foreign = Upstream(fixed(201, [("Location", "http://evil.example/r2")]))
    await run(p, foreign, method="PUT", path="/x")
    assert (await run(p, up)).h("x-cache") == "HIT"


async def test_range_requests_bypass() -> None:
    p = make_plugin()
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
    r = await run(p, up, headers=[("Range", "bytes=0-1")])
    assert r.h("x-cache") == "BYPASS"
    await run(p, up)
    assert up.calls == 2


async def test_no_cache_field_names_are_not_stored() -> None:
    p = make_plugin()
    up = Upstream(
        fixed(headers=[("Cache-Control", 'max-age=60, no-cache="a"'), ("a", "1"), ("b", "2")])
    )
    first = await run(p, up)
    assert first.h("a") == "1"
    r = await run(p, up)
    assert r.h("x-cache") == "HIT" and r.h("a") is None and r.h("b") == "2"


async def test_large_bodies_stream_but_are_not_stored() -> None:
    p = make_plugin(max_object=10, max_memory=10_000)
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")], body=b"x" * 50))
    assert (await run(p, up)).body == b"x" * 50
    assert (await run(p, up)).body == b"x" * 50
    assert up.calls == 2 and p.counters.too_large == 2


async def test_stale_if_error_on_5xx_and_connection_failure() -> None:
    clock = Clock()
    p = make_plugin(clock)
    good = Upstream(
        fixed(headers=[("Cache-Control", "max-age=10, stale-if-error=60"), ("Date", clock.date())])
    )
    await run(p, good)
    clock.t += 30
    r = await run(p, Upstream(fixed(503, body=b"down")))
    assert r.status == 200 and r.h("x-cache") == "STALE" and r.body == b"hello world"
    broken = Upstream(fixed())
    broken.fail = ConnectionRefusedError()
    r = await run(p, broken)
    assert r.status == 200 and r.h("x-cache") == "STALE"
    clock.t += 60  # past the window
    r = await run(p, broken)
    assert r.status == 502


async def test_stale_if_error_config_default_and_must_revalidate() -> None:
    clock = Clock()
    p = make_plugin(clock, stale_if_error="5m")
    await run(p, Upstream(fixed(headers=[("Cache-Control", "max-age=1"), ("Date", clock.date())])))
    clock.t += 100
    assert (await run(p, Upstream(fixed(502)))).h("x-cache") == "STALE"
    q = make_plugin(clock, route="r2", stale_if_error="5m")
    await run(q, Upstream(fixed(headers=[("Cache-Control", "max-age=1, must-revalidate")])))
    clock.t += 10
    assert (await run(q, Upstream(fixed(502)))).status == 502


async def test_stale_while_revalidate_serves_stale_and_refreshes_once() -> None:
    clock = Clock()
    calls: list[Request] = []

    async def forward(ctx: object, req: Request) -> object:
        calls.append(req)
        await asyncio.sleep(0.01)
        from portway.http.headers import Headers
        from portway.http.models import Response

        return Response(
            304,
            Headers.from_pairs(
                [
                    ("Cache-Control", "max-age=100, stale-while-revalidate=30"),
                    ("Date", clock.date()),
                ]
            ),
            b"",
            upstream=True,
        )

    p = make_plugin(clock, forward=forward)
    up = Upstream(
        fixed(
            headers=[
                ("Cache-Control", "max-age=10, stale-while-revalidate=30"),
                ("ETag", '"a"'),
                ("Date", clock.date()),
            ]
        )
    )
    await run(p, up)
    clock.t += 20
    results = await asyncio.gather(*(run(p, up) for _ in range(5)))
    assert all(r.h("x-cache") == "STALE" for r in results)
    await asyncio.gather(*p.refresher.tasks)
    assert len(calls) == 1 and calls[0].headers.get("if-none-match") == '"a"'
    r = await run(p, up)
    assert r.h("x-cache") == "HIT" and r.h("age") == "0"
    assert up.calls == 1


async def test_stale_while_revalidate_without_forward_validates_in_foreground() -> None:
    clock = Clock()
    p = make_plugin(clock)
    up = Upstream(fixed(headers=[("Cache-Control", "max-age=10, stale-while-revalidate=30")]))
    await run(p, up)
    clock.t += 20
    assert (await run(p, up)).h("x-cache") == "MISS"


async def test_concurrent_misses_collapse_into_one_upstream_request() -> None:
    gate = asyncio.Event()

    async def slow(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        await gate.wait()
        return 200, [("Cache-Control", "max-age=60")], b"shared body"

    p = make_plugin()
    up = Upstream(slow)
    tasks = [asyncio.create_task(run(p, up)) for _ in range(100)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert up.calls == 1
    assert all(r.body == b"shared body" for r in results)
    assert sum(r.h("x-cache") == "MISS" for r in results) == 1
    assert p.counters.collapsed == 99


async def test_collapsed_requests_go_upstream_when_result_is_not_storable() -> None:
    gate = asyncio.Event()

    async def slow(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        await gate.wait()
        return 200, [("Cache-Control", "private")], b"mine"

    p = make_plugin()
    up = Upstream(slow)
    tasks = [asyncio.create_task(run(p, up)) for _ in range(5)]
    await asyncio.sleep(0.02)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert up.calls == 5 and all(r.body == b"mine" for r in results)


async def test_registry_purges_and_stats() -> None:
    p = make_plugin(expose_key=True)
    await p.start()
    try:
        up = Upstream(fixed(headers=[("Cache-Control", "max-age=60")]))
        first = await run(p, up)
        key = first.h("x-cache-key")
        assert key is not None and key.startswith("r1/")
        assert await registry.purge_key(key) >= 1
        await run(p, up)
        assert await registry.purge_route("r1") >= 1
        await run(p, up)
        assert await registry.purge_url("http://example.com/r") == 1
        await run(p, up)
        assert await registry.purge_all() >= 1
        assert up.calls == 4
        s = registry.stats()
        assert s["routes"]["r1"]["miss"] >= 4
    finally:
        await p.aclose()
    assert p not in registry.plugins


def test_config_validation() -> None:
    from pydantic import ValidationError

    from portway.plugins.cache.config import CacheConfig

    c = CacheConfig.model_validate(
        {"max_memory": "1MB", "max_object": "1KB", "stale_while_revalidate": "30s"}
    )
    assert c.max_memory == 1024**2 and c.stale_while_revalidate == 30.0
    assert CacheConfig.model_validate({"stale_if_error": False}).stale_if_error is False
    for bad in (
        {"methods": ["POST"]},
        {"key": ["bogus"]},
        {"key": [{"nope": {}}]},
        {"max_object": "2MB", "max_memory": "1MB"},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            CacheConfig.model_validate(bad)


async def test_only_if_cached_error_is_a_gateway_error() -> None:
    p = make_plugin()
    from portway.pipeline.context import RequestContext
    from tests.plugins.cache.harness import make_request

    ctx = RequestContext(make_request(headers=[("Cache-Control", "only-if-cached")]))
    with pytest.raises(GatewayError) as ei:
        await p.on_request(ctx)
    assert ei.value.status == 504
