"""``CacheHooks`` (plugins/cache/hooks.py): the compiled hit the task-free runner calls
without a coroutine, and the full hook it falls back to. The wire bytes of both paths are
compared in test_cache_fast_hits.py; here, the hook's own contract."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portway.http.models import Request
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import Chain
from portway.plugins.cache.hooks import CacheHooks, Probe
from portway.plugins.cache.plugin import CachePlugin
from portway.plugins.cache.state import CACHE_STATE, Flight, Mode
from tests.plugins.cache.harness import Clock, Upstream, fixed, make_plugin, make_request, run


def _fresh(clock: Clock) -> Upstream:
    return Upstream(
        fixed(200, [("Cache-Control", "max-age=60"), ("ETag", '"a"'), ("Date", clock.date())])
    )


async def test_memory_store_offers_compiled_hooks_to_the_runner() -> None:
    p = make_plugin(Clock())
    assert isinstance(p.fast_hooks, CacheHooks)
    chain = Chain([p])
    assert chain.sync_request and chain.answers_inline


async def test_the_hooks_answer_a_hit_as_on_request_does_and_follow_the_clock() -> None:
    clock = Clock()
    p = make_plugin(clock)
    up = _fresh(clock)
    await run(p, up)
    clock.t += 7
    hooks = p.fast_hooks
    assert hooks is not None
    direct = hooks.request(RequestContext(make_request()))
    general = await p.on_request(RequestContext(make_request()))
    assert direct is not None and general is not None
    assert direct.status == general.status == 200
    assert direct.headers.raw() == general.headers.raw()
    assert direct.body == general.body == b"hello world"
    assert direct.headers.get("age") == "7" and direct.headers.get("x-cache") == "HIT"
    assert p.counters.hit == 2 and up.calls == 1


async def test_the_hooks_leave_other_requests_to_the_full_hook() -> None:
    clock = Clock()
    p = make_plugin(clock)
    up = _fresh(clock)
    await run(p, up)
    hooks = p.fast_hooks
    assert hooks is not None
    # request directives: declined by the compiled hit, decided by the full hook
    ctx = RequestContext(make_request(headers=[("Cache-Control", "no-cache")]))
    assert hooks.hit(ctx) is None
    assert hooks.request(ctx) is None  # goes upstream to validate
    flight = ctx.state.get(CACHE_STATE)
    assert flight is not None and flight.mode is Mode.VALIDATE
    assert ctx.upstream_request.headers.get("if-none-match") == '"a"'
    # a client conditional: the full hook's 304
    ctx = RequestContext(make_request(headers=[("If-None-Match", '"a"')]))
    assert hooks.hit(ctx) is None
    resp = hooks.request(ctx)
    assert resp is not None and resp.status == 304
    # a miss
    ctx = RequestContext(make_request(path="/other"))
    assert hooks.hit(ctx) is None
    assert hooks.request(ctx) is None
    flight = ctx.state.get(CACHE_STATE)
    assert flight is not None and flight.mode is Mode.MISS
    # the 304 is the only hit counted (the full hook's count), the rest went upstream
    assert up.calls == 1 and p.counters.hit == 1


async def test_a_subclass_keeps_the_coroutine_hooks_and_still_hits() -> None:
    class Sub(CachePlugin):
        pass

    clock = Clock()
    base = make_plugin(clock)
    p = Sub(base.config, base.env)
    p.clock = clock
    assert p.fast_hooks is None
    up = _fresh(clock)
    await run(p, up)
    r = await run(p, up)
    assert r.h("x-cache") == "HIT" and up.calls == 1


async def test_validators_go_on_a_copy_when_the_runner_shares_the_request() -> None:
    clock = Clock()
    p = make_plugin(clock)
    up = _fresh(clock)
    await run(p, up)
    clock.t += 120  # stale: revalidated with the stored ETag
    req: Request = make_request()
    ctx = RequestContext(req, copy=False)
    assert ctx.upstream_request is req
    assert await p.on_request(ctx) is None
    assert ctx.upstream_request is not req
    assert ctx.upstream_request.headers.get("if-none-match") == '"a"'
    assert req.headers.get("if-none-match") is None


async def test_a_cache_chain_shares_the_request_and_writes_its_hits_without_response_phases() -> (
    None
):
    from portway.pipeline.plugin import Plugin

    class Edits(Plugin[Any]):
        name = "edits"

        async def on_request(self, ctx: RequestContext) -> None:
            ctx.upstream_request.headers.set("x-edited", "1")

    class Watches(Plugin[Any]):
        name = "watches"

        async def on_response(self, ctx: RequestContext) -> None:
            return None

    p = make_plugin(Clock())
    chain = Chain([p])
    # the cache copies before it edits (validators): a hit never copies the request
    assert not chain.copies_upstream_request
    ctx = RequestContext(make_request())
    ctx.reached = 0
    assert chain.answer_is_quiet(ctx)
    # a plugin that edits the upstream request in place needs the copy first
    edits = Edits(p.config, p.env)
    assert Chain([edits, p]).copies_upstream_request
    # a response hook bound before the cache sees its answers; one after it does not
    watches = Watches(p.config, p.env)
    ctx.reached = 1
    assert not Chain([watches, p]).answer_is_quiet(ctx)
    ctx.reached = 0
    assert Chain([p, watches]).answer_is_quiet(ctx)


async def test_a_miss_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import portway.plugins.cache.plugin as plugin_mod

    clock = Clock()
    p = make_plugin(clock)
    up = _fresh(clock)
    await run(p, up)
    hooks = p.fast_hooks
    assert hooks is not None
    looked: list[str] = []
    real = plugin_mod.lookup_mem

    def counted(*a: Any) -> Any:
        looked.append(a[2])
        return real(*a)

    monkeypatch.setattr(plugin_mod, "lookup_mem", counted)
    ctx = RequestContext(make_request(path="/other"))
    got = hooks.probe(ctx)
    assert isinstance(got, Probe) and got.entry is None
    assert hooks.request(ctx) is None
    flight = ctx.state.get(CACHE_STATE)
    assert flight is not None and flight.mode is Mode.MISS and flight.key == got.key
    # stale: the probe's entry is what the full hook revalidates
    clock.t += 120
    ctx = RequestContext(make_request())
    assert hooks.request(ctx) is None
    flight = ctx.state.get(CACHE_STATE)
    assert flight is not None and flight.mode is Mode.VALIDATE
    assert looked == []  # the full hook took the hooks' lookup both times
    # a request the hooks do not probe (a directive) is looked up by the full hook
    ctx = RequestContext(make_request(headers=[("Cache-Control", "no-cache")]))
    assert hooks.request(ctx) is None
    assert len(looked) == 1


async def test_on_log_is_the_compiled_hooks_and_still_settles_flights() -> None:
    clock = Clock()
    p = make_plugin(clock)
    hooks = p.fast_hooks
    assert hooks is not None
    assert p.on_log == hooks.log
    ctx = RequestContext(make_request())
    p.on_log(ctx)  # no state: nothing to do, none created
    assert ctx._state is None
    flight = Flight(Mode.MISS, key="k")
    fut = asyncio.get_running_loop().create_future()
    flight.leader = fut
    ctx.state[CACHE_STATE] = flight
    p.on_log(ctx)
    assert fut.done() and flight.leader is None
