"""The task-free runner with plain-call hooks (``SyncHooks``) next to coroutine hooks: order,
short-circuit and the response phase's skip rule are the coroutine runner's."""

from __future__ import annotations

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import EmptyConfig, Plugin, PluginEnv
from portway.pipeline.runner import Chain, hooks_of
from portway.plugins.request_id.plugin import RequestIdConfig, RequestIdPlugin
from tests.identity_testing import make_context

RAN: list[str] = []


class _Coro(Plugin[EmptyConfig]):
    """A third-party style plugin: coroutine hooks, no ``fast_hooks``."""

    name = "t_sync_coro"
    sync_hooks = True
    Config = EmptyConfig
    answer = False

    async def on_request(self, ctx: RequestContext) -> Response | None:
        RAN.append("coro.request")
        return Response(403, Headers(), b"no") if self.answer else None

    async def on_response(self, ctx: RequestContext) -> None:
        RAN.append("coro.response")


def _rid() -> RequestIdPlugin:
    return RequestIdPlugin(RequestIdConfig.model_validate({}), PluginEnv())


def _respond(ctx: RequestContext) -> None:
    ctx.response = Response(200, Headers(), b"")


def test_hooks_are_found_only_where_offered() -> None:
    assert hooks_of(_rid()) is not None
    assert hooks_of(_Coro(EmptyConfig(), PluginEnv())) is None


def test_plain_calls_and_coroutines_in_one_chain() -> None:
    RAN.clear()
    rid, coro = _rid(), _Coro(EmptyConfig(), PluginEnv())
    chain = Chain([rid, coro])
    ctx = make_context(headers=[("x-request-id", "abc-1")])
    assert chain.run_request_sync(ctx) is None
    assert ctx.request_id == "abc-1" and RAN == ["coro.request"]
    assert ctx.upstream_request.headers.get("x-request-id") == "abc-1"
    _respond(ctx)
    chain.run_response_sync(ctx)
    assert RAN == ["coro.request", "coro.response"]
    assert ctx.response is not None and ctx.response.headers.get("x-request-id") == "abc-1"


def test_a_short_circuit_skips_later_plugins_response_hooks() -> None:
    RAN.clear()
    coro = _Coro(EmptyConfig(), PluginEnv())
    coro.answer = True
    rid_after = _rid()
    chain = Chain([coro, rid_after])
    ctx = make_context(headers=[("x-request-id", "abc-2")])
    answer = chain.run_request_sync(ctx)
    assert answer is not None and answer.status == 403
    # request_id came after the answer: it never saw the request, so its response hook
    # (a plain call) is skipped too; the answering plugin's runs
    assert ctx.request_id == "test"
    ctx.response = answer
    chain.run_response_sync(ctx)
    assert RAN == ["coro.request", "coro.response"]
    assert answer.headers.get("x-request-id") is None
