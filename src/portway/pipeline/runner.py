"""Phase runner: per-route plugin lists, computed once when a runtime graph is built."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from portway.errors import GatewayError, PluginError
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, implements

log = logging.getLogger("portway.plugins")

Bound = Plugin[Any]


def _wrap(plugin: Bound, phase: str, exc: Exception) -> GatewayError:
    if isinstance(exc, GatewayError):
        if exc.source is None:
            exc.source = plugin.name
        return exc
    log.error(
        "plugin %s failed in %s: %s",
        plugin.name,
        phase,
        exc,
        exc_info=exc,
    )
    return PluginError(f"plugin {plugin.name} failed", source=plugin.name)


class Chain:
    """The plugins bound to one route (globals merged in), split per phase.

    Request-side lists are in binding order; response-side lists are reversed.
    """

    __slots__ = (
        "buffer_cap",
        "on_error",
        "on_log",
        "on_request",
        "on_response",
        "on_response_chunk",
        "on_upstream_request",
        "plugins",
        "transforms_body",
    )

    def __init__(self, plugins: Sequence[Bound]) -> None:
        self.plugins = tuple(plugins)

        def pick(phase: str) -> tuple[Bound, ...]:
            return tuple(p for p in self.plugins if implements(p, phase))

        self.on_request = pick("on_request")
        self.on_upstream_request = pick("on_upstream_request")
        self.on_response = tuple(reversed(pick("on_response")))
        self.on_response_chunk = tuple(reversed(pick("on_response_chunk")))
        self.on_error = tuple(reversed(pick("on_error")))
        self.on_log = tuple(reversed(pick("on_log")))
        #: some chunk hook may change the body length, so Content-Length cannot be kept
        self.transforms_body = any(not p.observes_response_chunks for p in self.on_response_chunk)
        caps = [p.buffer_response for p in self.on_response_chunk if p.buffer_response]
        self.buffer_cap: int | None = max(caps) if caps else None

    async def run_request(self, ctx: RequestContext) -> Response | None:
        """Run ``on_request`` in order; return the first short-circuit response."""
        trace = ctx.trace
        tracer = ctx.extra.get("_tracer")
        for p in self.on_request:
            t0 = time.perf_counter() if trace is not None else 0.0
            tok = tracer.start_phase(ctx, p.name, "on_request") if tracer is not None else None
            try:
                resp = await p.on_request(ctx)
            except Exception as e:
                err = _wrap(p, "on_request", e)
                if tracer is not None:
                    tracer.end_phase(tok, err)
                ctx.extra["rejected_by"] = p.name
                if trace is not None:
                    ctx.record("on_request", p.name, _ms(t0), f"error {err.status}")
                raise err from e
            if tracer is not None:
                tracer.end_phase(tok)
            if trace is not None:
                ctx.record("on_request", p.name, _ms(t0), "respond" if resp else "continue")
            if resp is not None:
                ctx.extra["rejected_by"] = p.name
                return resp
        return None

    async def run_upstream_request(self, ctx: RequestContext) -> None:
        for p in self.on_upstream_request:
            try:
                await p.on_upstream_request(ctx)
            except Exception as e:
                raise _wrap(p, "on_upstream_request", e) from e

    async def run_response(self, ctx: RequestContext) -> None:
        trace = ctx.trace
        tracer = ctx.extra.get("_tracer")
        for p in self.on_response:
            t0 = time.perf_counter() if trace is not None else 0.0
            tok = tracer.start_phase(ctx, p.name, "on_response") if tracer is not None else None
            try:
                await p.on_response(ctx)
            except Exception as e:
                err = _wrap(p, "on_response", e)
                if tracer is not None:
                    tracer.end_phase(tok, err)
                raise err from e
            if tracer is not None:
                tracer.end_phase(tok)
            if trace is not None:
                ctx.record("on_response", p.name, _ms(t0))

    async def run_chunk(self, ctx: RequestContext, chunk: bytes, end: bool) -> bytes:
        for p in self.on_response_chunk:
            chunk = await p.on_response_chunk(ctx, chunk, end)
        return chunk

    async def run_error(self, ctx: RequestContext, exc: BaseException) -> Response | None:
        for p in self.on_error:
            try:
                resp = await p.on_error(ctx, exc)
            except Exception as e:
                log.error("plugin %s failed in on_error: %s", p.name, e, exc_info=e)
                continue
            if resp is not None:
                return resp
        return None

    def run_log(self, ctx: RequestContext) -> None:
        for p in self.on_log:
            try:
                p.on_log(ctx)
            except Exception as e:  # on_log never breaks a request
                log.error("plugin %s failed in on_log: %s", p.name, e, exc_info=e)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


EMPTY_CHAIN = Chain(())
