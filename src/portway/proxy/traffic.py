"""A route's traffic rules: which upstream serves each request (split, versions), copies to
a shadow (mirror) and a second upstream behind the first (fallback).

The one seam with the data plane: :meth:`RoutePolicy.choose` decides, once per request,
and stores a :class:`~portway.upstream.choice.Choice` in ``ctx.state[CHOICE]``; forwarding
then uses ``choice.rt`` (a route runtime whose upstream is the chosen one). The task-free
path calls ``choose`` after the request hooks and carries on with ``choice.rt`` when the
response needs no added field; everything else goes through :meth:`RoutePolicy.forward`
on the general path (``handler.ProxyApp.serve``).

Fallback (strangler fig) resends a request only when that is safe: after a connect failure
or "no available target" (nothing reached the first upstream) while the body was not read,
or after a listed status when the whole request is still held (no body, or a body within
``fallback.max_body_bytes`` buffered before the first attempt). Responses of fallback routes
say who served them in ``X-Portway-Upstream``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from portway.config.schema import RouteConfig
from portway.errors import UnavailableError, UpstreamConnectError
from portway.http.body import BodyStream
from portway.http.models import Response
from portway.observability.counters import LazyCounter
from portway.pipeline.context import RequestContext
from portway.proxy.forward import Forwarder, Resume
from portway.proxy.mirror import Mirror
from portway.proxy.split import Arm, Splitter
from portway.proxy.versions import VersionRouter
from portway.upstream.choice import CHOICE, Choice

if TYPE_CHECKING:
    from portway.http.server import ClientConnection
    from portway.runtime.graph import RouteRuntime, RuntimeGraph

log: Final = logging.getLogger("portway.proxy")

VARIANT_REQUESTS: Final = LazyCounter(
    "portway_route_variant_requests",
    "Requests of routes with traffic rules, by the variant (upstream) chosen and why",
    ["route", "variant", "reason"],
)
FALLBACKS: Final = LazyCounter(
    "portway_fallback_requests",
    "Requests resent to a route's fallback upstream, by cause (status or connect_error)",
    ["route", "upstream", "cause"],
)

#: response field naming the upstream that served a request of a fallback route
SERVED_BY: Final = "x-portway-upstream"
#: a first answer that falls back is read and dropped (keeping its connection) up to this
_DISCARD_MAX: Final = 64 * 1024


class RoutePolicy:
    """Built per route per runtime graph (see ``runtime/builder.py``); immutable config,
    mutable counters (the split's round-robin state, the mirror's sampling)."""

    def __init__(
        self, cfg: RouteConfig, primary: RouteRuntime, variants: Callable[[str], RouteRuntime]
    ) -> None:
        assert primary.upstream is not None
        self.route = cfg.name
        self.primary = primary
        self.primary_name = primary.upstream.name
        self.split = (
            Splitter(cfg.split, Arm(self.primary_name, primary, 0), variants)
            if cfg.split is not None
            else None
        )
        self.versions = VersionRouter(cfg.versions, variants) if cfg.versions else None
        m = cfg.mirror
        self.mirror = (
            Mirror(cfg.name, variants(m.upstream), m.sample, m.max_in_flight, m.max_body_bytes)
            if m is not None
            else None
        )
        fb = cfg.fallback
        self.fallback_rt = variants(fb.upstream) if fb is not None else None
        self.fallback_on = frozenset(fb.on) if fb is not None else frozenset()
        hold = [x.max_body_bytes for x in (m, fb) if x is not None]
        #: request bodies up to this size are buffered before the first attempt
        self.hold_limit = max(hold) if hold else 0
        #: the task-free path may serve this route (mirror and fallback need a task)
        self.fast_ok = m is None and fb is None
        self._counters: dict[tuple[str, str], Any] = {}

    # --- the choice ---------------------------------------------------------------------------
    def choose(self, ctx: RequestContext) -> Choice:
        """The request's variant, decided on first call (then read back). Raises
        :class:`~portway.proxy.versions.UnknownVersionError` for an unknown version."""
        st = ctx.state
        c = st.get(CHOICE)
        if c is not None:
            return c
        c = self._decide(ctx)
        st[CHOICE] = c
        self._count(c.variant, c.reason)
        if ctx.trace is not None:
            ctx.record(
                "traffic", c.variant, 0.0, c.reason + (f" v{c.version}" if c.version else "")
            )
        return c

    def _decide(self, ctx: RequestContext) -> Choice:
        if self.versions is not None:
            ver, name, rt, headers = self.versions.choose(ctx)
            return Choice(rt, name, "version", ver, list(headers))
        if self.split is not None:
            arm, reason, cookie = self.split.choose(ctx)
            if cookie is None:
                return Choice(arm.rt, arm.name, reason)
            return Choice(arm.rt, arm.name, reason, None, [self.split.set_cookie(cookie)])
        return Choice(self.primary, self.primary_name, "route")

    def _count(self, variant: str, reason: str) -> None:
        k = (variant, reason)
        child = self._counters.get(k)
        if child is None:
            child = self._counters[k] = VARIANT_REQUESTS.labels(self.route, variant, reason)
        child.inc()

    # --- the general path ---------------------------------------------------------------------
    async def forward(
        self,
        ctx: RequestContext,
        graph: RuntimeGraph,
        conn: ClientConnection,
        resume: Resume | None,
    ) -> Response:
        """Forward ``ctx.upstream_request`` (prepared) to the chosen variant; mirror it;
        fall back when configured and safe; add the choice's response fields."""
        if resume is not None and resume.error is not None:
            raise resume.error
        c = self.choose(ctx)
        ureq = ctx.upstream_request
        held: bytes | None = b"" if ureq.body is None else None
        body = ureq.body
        if (
            body is not None
            and self.hold_limit
            and ureq.content_length is not None
            and ureq.content_length <= self.hold_limit
        ):
            req = ctx.request
            if req.expect_continue and req.version != "1.0" and body.received == 0:
                # the client waits for this before sending the body we are about to hold (the
                # forwarder may send another; RFC 9110 §15.2: clients take several 1xx)
                conn.send_info(100, b"Continue", [])
            held = await body.read_all(self.hold_limit)
            ureq.body = BodyStream.of(held)
        if self.mirror is not None:
            self.mirror.submit(ctx, graph, held)
        fwd = Forwarder(graph)
        if self.fallback_rt is None:
            resp = await fwd.forward(ctx, c.rt, conn, resume)
        else:
            resp = await self._with_fallback(ctx, fwd, c, conn, resume, held)
        for k, v in _final_choice(ctx, c).headers:
            resp.headers.add(k, v)
        return resp

    async def _with_fallback(
        self,
        ctx: RequestContext,
        fwd: Forwarder,
        c: Choice,
        conn: ClientConnection,
        resume: Resume | None,
        held: bytes | None,
    ) -> Response:
        fb = self.fallback_rt
        assert fb is not None and fb.upstream is not None
        ureq = ctx.upstream_request
        try:
            resp = await fwd.forward(ctx, c.rt, conn, resume)
        except (UpstreamConnectError, UnavailableError):
            body = ureq.body
            if held is None and body is not None and (body.received > 0 or body.at_eof):
                raise  # part of the body is gone: it cannot be sent again
            cause = "connect_error"
        else:
            if resp.status not in self.fallback_on or held is None:
                resp.headers.set(SERVED_BY, c.variant)
                return resp
            cause = str(resp.status)
            await self._discard(ctx, resp, c.rt)
        if held is not None and ureq.body is not None:
            ureq.body = BodyStream.of(held)
        name = fb.upstream.name
        ctx.state[CHOICE] = Choice(fb, name, "fallback", c.version, c.headers)
        self._count(name, "fallback")
        FALLBACKS.labels(self.route, name, cause).inc()
        if ctx.trace is not None:
            ctx.record("traffic", name, 0.0, f"fallback after {cause}")
        resp = await fwd.forward(ctx, fb, conn)
        resp.headers.set(SERVED_BY, name)
        return resp

    @staticmethod
    async def _discard(ctx: RequestContext, resp: Response, rt: RouteRuntime) -> None:
        """Drop the first upstream's answer; its connection is kept when the body is small."""
        body = resp.body
        ok = False
        cl = resp.headers.get_raw(b"content-length")
        if (
            isinstance(body, BodyStream)
            and cl is not None
            and cl.isdigit()
            and int(cl) <= _DISCARD_MAX
        ):
            try:
                async with asyncio.timeout(rt.read_timeout):
                    await body.drain()
                ok = True
            except (TimeoutError, ConnectionError, OSError):
                ok = False
        Forwarder.finish_exchange(ctx, ok=ok)

    # --- lifecycle and introspection ----------------------------------------------------------
    async def aclose(self) -> None:
        if self.mirror is not None:
            await self.mirror.aclose()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"upstream": self.primary_name}
        if self.split is not None:
            out["split"] = self.split.describe()
        if self.versions is not None:
            out["versions"] = {"from": self.versions.source, "known": self.versions.known}
        if self.mirror is not None:
            out["mirror"] = {"upstream": self.mirror.upstream, "sample": self.mirror.sample}
        if self.fallback_rt is not None and self.fallback_rt.upstream is not None:
            out["fallback"] = {
                "upstream": self.fallback_rt.upstream.name,
                "on": sorted(self.fallback_on),
            }
        return out


def _final_choice(ctx: RequestContext, default: Choice) -> Choice:
    """The request's final choice (a fallback replaces the first one)."""
    c = ctx.state.get(CHOICE)
    return c if c is not None else default
