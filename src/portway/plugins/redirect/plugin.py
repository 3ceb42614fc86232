"""``redirect``: answer with a redirect (http to https, or to a URL template)."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.redirect.config import RedirectConfig

_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
#: what a path keeps unencoded (RFC 3986 pchar and "/"; "%" since the path is already encoded)
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~%"


def is_https(req: Request) -> bool:
    """The client used https: on a TLS listener, or behind a trusted proxy that says so."""
    if req.scheme == "https":
        return True
    if req.trusted_peer:
        xfp = req.headers.get_raw(b"x-forwarded-proto")
        return xfp is not None and xfp.split(b",")[0].strip().lower() == b"https"
    return False


def _host_only(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class RedirectPlugin(Plugin[RedirectConfig]):
    """``https: true``: a request that did not arrive over https (see :func:`is_https`) is
    answered with ``status`` and ``Location: https://HOST/path?query`` (the Host's port is
    dropped unless ``https_port`` names one); https requests pass on. ``to``: every request is
    answered with the template filled in (``{path}`` and ``{params.NAME}`` as routed, still
    percent-encoded, anything outside RFC 3986 pchar encoded; ``{query}`` raw); the query is
    appended when the template does not place it and ``keep_query`` is on. The answer has a
    small JSON body naming the location."""

    name = "redirect"
    stage = Stage.edge
    Config = RedirectConfig
    sync_hooks = True

    def __init__(self, config: RedirectConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._has_query = config.to is not None and "{query}" in config.to

    def location(self, ctx: RequestContext) -> str:
        req = ctx.request
        c = self.config
        query = req.query.decode("latin-1")
        if c.to is None:
            host = _host_only(req.host)
            if c.https_port is not None and c.https_port != 443:
                host = f"{host}:{c.https_port}"
            # the normalised path (what routing saw), never an absolute-form target
            return f"https://{host}{req.target}"
        params = ctx.params

        def fill(m: re.Match[str]) -> str:
            name = m.group(1)
            if name == "path":
                return quote(req.path, safe=_PATH_SAFE)
            if name == "query":
                return query
            if name == "host":
                return req.host
            # params are path segments as routed (still percent-encoded where they were)
            return quote(params.get(name[7:], ""), safe=_PATH_SAFE)

        loc = _PLACEHOLDER.sub(fill, c.to)
        if self._has_query:
            loc = loc.rstrip("?")
        elif c.keep_query and query:
            loc += ("&" if "?" in loc else "?") + query
        return loc

    async def on_request(self, ctx: RequestContext) -> Response | None:
        if self.config.https and is_https(ctx.request):
            return None
        loc = self.location(ctx)
        h = Headers()
        h.set("location", loc)
        resp = Response.json(self.config.status, {"redirect": loc}, h)
        return resp
