"""``cors``: answer CORS preflights at the gateway and add CORS headers to every response."""

from __future__ import annotations

from typing import Final

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._http.vary import add_vary
from portway.plugins.cors.config import CorsConfig, OriginMatcher

#: set when this plugin answered the request's preflight itself
_PREFLIGHT: Final = ContextKey[bool]("cors.preflight")

#: CORS fields an upstream may send that this plugin owns on the routes it is bound to
_OWNED: Final = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-expose-headers",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-max-age",
        b"access-control-allow-private-network",
    }
)


def is_preflight(headers: Headers, method: str) -> bool:
    """An OPTIONS request carrying Origin and Access-Control-Request-Method (Fetch §3.2.2)."""
    return (
        method == "OPTIONS"
        and headers.get_raw(b"origin") is not None
        and headers.get_raw(b"access-control-request-method") is not None
    )


class CorsPlugin(Plugin[CorsConfig]):
    """Cross-origin resource sharing per the Fetch standard.

    A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
    here with 204 and never reaches the upstream; the route matches a preflight by the method
    it announces, so ``match.methods`` need not list OPTIONS. Any other response of the route
    (upstream answers and the gateway's own errors from plugins after this one, such as a 401
    from ``key_auth``: the plugin is stage ``edge``) gets ``Access-Control-Allow-Origin`` and
    friends when its Origin is allowed, and none when it is not. ``Vary: Origin`` is added
    whenever the answer depends on the Origin (any ``allow_origins`` other than ``["*"]``);
    CORS fields the upstream sent are replaced by the plugin's.
    """

    name = "cors"
    stage = Stage.edge
    Config = CorsConfig
    sync_hooks = True

    def __init__(self, config: CorsConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        c = config
        self.origins = OriginMatcher(c.allow_origins)
        self._any_method = "*" in c.allow_methods
        self._methods = ", ".join(c.allow_methods)
        self._any_header = "*" in c.allow_headers
        self._headers = ", ".join(c.allow_headers)
        self._expose = ", ".join(c.expose_headers)
        self._max_age = str(int(c.max_age)) if c.max_age is not None else None
        #: "*" is sent only when any origin is allowed without credentials (validated)
        self._star = self.origins.any

    def _allow_origin(self, headers: Headers, origin: str) -> None:
        headers.set("access-control-allow-origin", "*" if self._star else origin)
        if self.config.allow_credentials:
            headers.set("access-control-allow-credentials", "true")

    async def on_request(self, ctx: RequestContext) -> Response | None:
        req = ctx.request
        if not is_preflight(req.headers, req.method):
            return None
        ctx.state[_PREFLIGHT] = True
        h = Headers()
        vary = [] if self._star else ["Origin"]
        if self._any_header:
            vary.append("Access-Control-Request-Headers")
        origin = req.headers.get("origin") or ""
        if self.origins.allows(origin):
            self._allow_origin(h, origin)
            if self._any_method:
                h.set(
                    "access-control-allow-methods",
                    req.headers.get("access-control-request-method") or "",
                )
            else:
                h.set("access-control-allow-methods", self._methods)
            if self._any_header:
                requested = req.headers.get("access-control-request-headers")
                if requested:
                    h.set("access-control-allow-headers", requested)
            elif self._headers:
                h.set("access-control-allow-headers", self._headers)
            if self._max_age is not None:
                h.set("access-control-max-age", self._max_age)
            if self.config.private_network and (
                (req.headers.get("access-control-request-private-network") or "").lower() == "true"
            ):
                h.set("access-control-allow-private-network", "true")
        if vary:
            h.set("vary", ", ".join(vary))
        return Response(204, h)

    async def on_response(self, ctx: RequestContext) -> None:
        resp = ctx.response
        if resp is None or (ctx.request.method == "OPTIONS" and ctx.state.get(_PREFLIGHT)):
            return
        h = resp.headers
        h.remove_many(_OWNED)
        if not self._star:
            add_vary(h, "Origin")
        origin = ctx.request.headers.get("origin")
        if origin is None or not self.origins.allows(origin):
            return
        self._allow_origin(h, origin)
        if self._expose:
            h.set("access-control-expose-headers", self._expose)
