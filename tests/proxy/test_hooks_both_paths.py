"""Plugin hooks that fail behave the same on both serving paths (the ``path`` fixture): the
error's meaning is kept, it is logged once with its traceback, and no hook runs twice —
also when the task-free path hands a failed response phase back to the task."""

from __future__ import annotations

import logging

import orjson
import pytest

from portway.errors import GatewayError
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import EmptyConfig, Plugin
from portway.pipeline.registry import registry
from tests.helpers import ServingPath, raw_request, run_gateway, run_upstream, simple_config

#: hook runs of ``_Failing``, by (phase, request path)
RUNS: dict[tuple[str, str], int] = {}


class _Failing(Plugin[EmptyConfig]):
    """Sync hooks (the task-free path runs them) that fail on chosen paths: ``/req-bug`` and
    ``/resp-bug`` raise a plain exception (a bug), ``/resp-deny`` a GatewayError (403)."""

    name = "t_both_failing"
    sync_hooks = True
    Config = EmptyConfig

    async def on_request(self, ctx: RequestContext) -> Response | None:
        key = ("on_request", ctx.request.path)
        RUNS[key] = RUNS.get(key, 0) + 1
        if ctx.request.path == "/req-bug":
            raise RuntimeError("request hook bug")
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        key = ("on_response", ctx.request.path)
        RUNS[key] = RUNS.get(key, 0) + 1
        if ctx.request.path == "/resp-bug":
            raise RuntimeError("response hook bug")
        if ctx.request.path == "/resp-deny":
            raise GatewayError("denied after the fact", status=403, code="denied")


registry.register(_Failing)

CASES = {
    # path: (status, code, phase that failed, logged with a traceback)
    "/req-bug": (500, "plugin_error", "on_request", True),
    "/resp-bug": (500, "plugin_error", "on_response", True),
    "/resp-deny": (403, "denied", "on_response", False),
}


@pytest.mark.parametrize("target", sorted(CASES))
async def test_a_failing_hook_runs_once_and_keeps_its_meaning(
    path: ServingPath, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, code, phase, logged = CASES[target]
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[{"name": "t_both_failing"}])
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            warmed = len(up.requests)
            RUNS.clear()
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                out = await raw_request(
                    gw.port,
                    f"GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode(),
                )
            head, _, body = out.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 %d " % status), out
            doc = orjson.loads(body)
            assert (doc["status"], doc["code"]) == (status, code)
            # each hook ran exactly once (a plugin that saw the request sees the gateway's
            # own answer to it: on_response runs on the 500 of a failed on_request too)
            assert {("on_request", target): 1, ("on_response", target): 1} == RUNS
            if phase == "on_response":
                # the response phase failed after the upstream answered: on a warm pool the
                # exchange was task-free and handed the error back to the task
                path.assert_served(1, fallback=1)
            else:
                # a request hook's failure is answered before any exchange, on both paths
                path.assert_served(1, local=1)
            assert len(up.requests) == warmed + (phase == "on_response")
            target_state = gw.gateway.graph.upstreams["u"].targets[0]
            assert target_state.healthy and target_state.fails == 0 and target_state.in_flight == 0
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        if logged:
            assert len(errors) == 1, [r.getMessage() for r in errors]
            assert errors[0].exc_info is not None and "t_both_failing" in errors[0].getMessage()
        else:
            assert errors == [], [r.getMessage() for r in errors]
