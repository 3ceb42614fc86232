"""Field hooks (``pipeline/runner.py:FieldHooks``): response hooks whose work is "set these
fields". The chain runs them on parsed fields (``run_response_sync``, the general rule
``replace_fields``) or on none (``run_response_fields``, for the lite response head); both
give the same fields, in the same order, a later hook's replacing an earlier one's."""

from __future__ import annotations

from typing import Any

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import EmptyConfig, Plugin, PluginEnv
from portway.pipeline.runner import Chain, FieldHooks, replace_fields
from portway.plugins.rate_limit.config import RateLimitConfig
from portway.plugins.rate_limit.plugin import RateLimitPlugin
from portway.plugins.request_id.plugin import RequestIdConfig, RequestIdPlugin
from tests.identity_testing import make_context


class _Coro(Plugin[EmptyConfig]):
    """A coroutine response hook (no field hook)."""

    name = "t_field_coro"
    sync_hooks = True
    Config = EmptyConfig

    async def on_response(self, ctx: RequestContext) -> None:
        assert ctx.response is not None
        ctx.response.headers.add_raw(b"x-coro", b"1")


class _RidSub(RequestIdPlugin):
    """A subclass may change what the hooks reproduce: it keeps the coroutines."""


def _rid(**cfg: Any) -> RequestIdPlugin:
    return RequestIdPlugin(RequestIdConfig.model_validate(cfg), PluginEnv())


def _rl(**cfg: Any) -> RateLimitPlugin:
    base: dict[str, Any] = {"key": ["ip"], "limits": [{"rate": 10, "per": "1s"}]}
    return RateLimitPlugin(RateLimitConfig.model_validate({**base, **cfg}), PluginEnv())


def _upstream_fields() -> list[tuple[bytes, bytes]]:
    return [
        (b"server", b"up"),
        (b"x-ratelimit-limit", b"5"),
        (b"x-request-id", b"up-id"),
        (b"x-a", b"1"),
    ]


def test_only_chains_of_field_hooks_are_fields_only() -> None:
    assert isinstance(_rid().fast_hooks, FieldHooks)
    assert isinstance(_rl().fast_hooks, FieldHooks)
    assert Chain([_rid(), _rl()]).fields_only
    assert Chain([_rl()]).fields_only
    assert not Chain([]).fields_only  # nothing to run: the plain lite head
    assert not Chain([_rid(), _Coro(EmptyConfig(), PluginEnv())]).fields_only
    sub = _RidSub(RequestIdConfig.model_validate({}), PluginEnv())
    assert sub.fast_hooks is None and not Chain([sub, _rl()]).fields_only


def _both(chain: Chain, ctx: RequestContext) -> tuple[list[tuple[bytes, bytes]], ...]:
    """The response fields as ``run_response_sync`` leaves them on parsed upstream fields,
    and as the lite head builds them: upstream fields minus the replaced names, plus
    ``run_response_fields``'s."""
    ctx.response = Response(200, Headers.adopt(_upstream_fields()), b"")
    chain.run_response_sync(ctx)
    general = list(ctx.response.headers.raw())
    ctx.response = Response(200, None, b"")
    items: list[tuple[bytes, bytes]] = []
    reps = chain.run_response_fields(ctx, items)
    names = frozenset().union(*(r.names for r in reps)) if reps else frozenset()
    lite = [kv for kv in _upstream_fields() if kv[0] not in names] + items
    return general, lite


def test_both_runs_give_the_same_fields_in_hook_order() -> None:
    chain = Chain([_rid(), _rl()])
    ctx = make_context(headers=[("x-request-id", "abc-1")])
    assert chain.run_request_sync(ctx) is None
    general, lite = _both(chain, ctx)
    assert general == lite
    # response hooks run in reverse binding order: rate_limit's fields, then the echo
    names = [k for k, _ in general]
    assert names == [
        b"server",
        b"x-a",
        b"ratelimit-policy",
        b"ratelimit",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
        b"x-request-id",
    ]
    assert general[-1] == (b"x-request-id", b"abc-1")
    assert (b"x-ratelimit-remaining", b"9") in general


def test_a_later_hook_replaces_an_earlier_ones_field() -> None:
    # request_id echoes under a name rate_limit sets; its hook runs last and wins
    chain = Chain([_rid(header="x-ratelimit-limit"), _rl(headers="both")])
    ctx = make_context(headers=[("x-ratelimit-limit", "abc-2")])
    assert chain.run_request_sync(ctx) is None
    general, lite = _both(chain, ctx)
    assert general == lite
    names = [k for k, _ in general]
    assert names.count(b"x-ratelimit-limit") == 1 and general[-1] == (
        b"x-ratelimit-limit",
        b"abc-2",
    )
    assert b"x-ratelimit-remaining" in names and (b"x-request-id", b"up-id") in general


def test_hooks_that_set_nothing_replace_nothing() -> None:
    # no echo, no rate-limit fields: the upstream's fields stay as they are
    chain = Chain([_rid(echo=False), _rl(headers="none")])
    ctx = make_context()
    assert chain.run_request_sync(ctx) is None
    items: list[tuple[bytes, bytes]] = []
    ctx.response = Response(200, None, b"")
    assert chain.run_response_fields(ctx, items) is None and items == []
    general, lite = _both(chain, ctx)
    assert general == lite == _upstream_fields()


def test_a_short_circuit_skips_later_field_hooks() -> None:
    chain = Chain([_rid(), _rl(limits=[{"rate": 1, "per": "1h"}])])
    first = make_context(headers=[("x-request-id", "abc-3")])
    assert chain.run_request_sync(first) is None
    ctx = make_context(headers=[("x-request-id", "abc-4")])
    try:
        chain.run_request_sync(ctx)
    except Exception as e:
        assert getattr(e, "status", None) == 429
    else:
        raise AssertionError("the second request was not limited")
    # rate_limit refused: both hooks saw the request, both set their fields
    assert ctx.reached == 1
    general, lite = _both(chain, ctx)
    assert general == lite and (b"x-request-id", b"abc-4") in general
    # a refusal by the first plugin: the second's response hook never runs
    ctx.reached = 0
    general, lite = _both(chain, ctx)
    assert general == lite
    assert (b"x-ratelimit-limit", b"5") in general and (b"x-request-id", b"abc-4") in general
    assert not any(k.startswith(b"ratelimit") for k, _ in general)


def test_replace_fields_removes_every_field_of_the_names() -> None:
    h = Headers.adopt([(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"c", b"4")])
    replace_fields(h, frozenset({b"a", b"z"}), [(b"a", b"9"), (b"z", b"8")])
    assert h.raw() == [(b"b", b"2"), (b"c", b"4"), (b"a", b"9"), (b"z", b"8")]
    untouched = Headers.adopt([(b"b", b"2")])
    replace_fields(untouched, frozenset({b"a"}), [])
    assert untouched.raw() == [(b"b", b"2")]


def _with_runs(chain: Chain, ctx: RequestContext) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    runs: list[bytes] = []
    items: list[tuple[bytes, bytes]] = []
    ctx.response = Response(200, None, b"")
    chain.run_response_fields(ctx, items, runs)
    return runs, items


def test_repeated_fields_come_as_lines_that_say_the_same() -> None:
    """HTTP/1.1's writer passes ``runs``: a leading hook that sets the very same fields as
    last time (a rate limit far from its limit) hands them as one prerendered run; the run
    then the items are the fields the plain call gives, every time, replacement included."""
    from portway.http.models import parse_fields

    big = {"limits": [{"rate": 1_000_000_000, "per": "1s"}]}
    cases = [
        [_rid(), _rl(**big)],
        [_rid(header="x-ratelimit-limit"), _rl(headers="both", **big)],
        [_rl(**big)],
        [_rid(echo=False), _rl(headers="none")],
        [_rl(**big), _rid()],
    ]
    for n, plugins in enumerate(cases):
        chain = Chain(plugins)
        moved = 0
        for i in range(4):
            sent = [("x-request-id", f"id-{i}"), ("x-ratelimit-limit", f"id-{i}")]
            a = make_context(headers=sent)
            b = make_context(headers=sent)
            assert chain.run_request_sync(a) is None and chain.run_request_sync(b) is None
            plain: list[tuple[bytes, bytes]] = []
            a.response = Response(200, None, b"")
            reps = chain.run_response_fields(a, plain)
            runs, items = _with_runs(chain, b)
            assert parse_fields(runs) + items == plain
            assert chain.run_response_fields(b, []) == reps or reps is None
            moved += len(runs)
        # the leading rate-limit fields repeat from the second time on (not when a later
        # hook replaces one of them)
        assert moved == (3 if n in (0, 2) else 0)
