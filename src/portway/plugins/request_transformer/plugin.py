"""``request_transformer``: rewrite the upstream request's headers, query, path and JSON body.

Order: headers (remove, rename, replace, add, append), query (remove, add), JSON body
(remove, rename, set) in ``on_request``; the path template in ``on_upstream_request``, so
``{path}`` is the path the route would forward (after ``strip_prefix``/``rewrite``) and a
retry starts again from it. A JSON rule buffers the body through
:mod:`portway.pipeline.buffering` (bounded by ``max_body_bytes``: 413 beyond it) and resends
it with an exact Content-Length; a body that is not JSON passes through unchanged (logged).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Final
from urllib.parse import quote, quote_plus, unquote_plus

from portway.http.models import Response
from portway.pipeline.buffering import (
    BodyLimit,
    buffer_request_body,
    is_json,
    replace_request_body,
)
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._json import codec
from portway.plugins._transform.template import Template, compile_template
from portway.plugins.request_transformer.config import QueryRules, RequestTransformerConfig

log: Final = logging.getLogger("portway.plugins")

#: the upstream path before this plugin's template was applied (retries start from it)
_ORIGINAL_PATH: Final[ContextKey[str]] = ContextKey("request_transformer.path")


def _path_escape(kind: str, value: str) -> str:
    if kind in ("path", "params"):
        return value  # already a path (params stay percent-encoded as received)
    if value in (".", ".."):
        return value.replace(".", "%2E")  # never a dot segment from a header or a claim
    return quote(value, safe="-._~!$&'()*+,;=:@")


@lru_cache(maxsize=256)
def _json_template(value: str) -> Template:
    return compile_template(value, strict=False)


def edit_query(query: bytes, rules: QueryRules, ctx: RequestContext) -> bytes:
    """``query`` with ``rules`` applied; untouched arguments keep their exact bytes."""
    parts = [p for p in query.split(b"&") if p] if query else []
    names = [unquote_plus(p.split(b"=", 1)[0].decode("latin-1")) for p in parts]
    if rules.remove:
        drop = set(rules.remove)
        kept = [(n, p) for n, p in zip(names, parts, strict=True) if n not in drop]
        names = [n for n, _ in kept]
        parts = [p for _, p in kept]
    present = set(names)
    for name in rules.add:
        if name in present:
            continue
        tpl = rules._tpl[name]
        rendered = tpl.render(ctx)
        if not rendered and not tpl.constant:
            continue  # a placeholder with no value adds nothing
        parts.append((quote_plus(name) + "=" + quote_plus(rendered)).encode("latin-1"))
    return b"&".join(parts)


class RequestTransformerPlugin(Plugin[RequestTransformerConfig]):
    """See the module docstring; the config keys are those of Kong's request-transformer."""

    name = "request_transformer"
    stage = Stage.transform
    Config = RequestTransformerConfig

    def __init__(self, config: RequestTransformerConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.limit = BodyLimit(env.settings)
        self._json = None if config.json_rules.empty else config.json_rules

    async def on_request(self, ctx: RequestContext) -> Response | None:
        cfg = self.config
        ureq = ctx.upstream_request
        if not cfg.headers.empty:
            cfg.headers.apply(ureq.headers, ctx)
        if not cfg.query.empty:
            ureq.query = edit_query(ureq.query, cfg.query, ctx)
        if self._json is not None and ureq.body is not None:
            await self._edit_body(ctx)
        return None

    async def _edit_body(self, ctx: RequestContext) -> None:
        rules = self._json
        assert rules is not None
        ureq = ctx.upstream_request
        if not is_json(ureq.headers.get_raw(b"content-type")):
            log.info(
                "request_transformer: %s body is not JSON (%s): json rules skipped",
                ctx.route_name,
                (ureq.headers.get("content-type") or "no content-type"),
            )
            return
        data = await buffer_request_body(ctx, self.limit.of(ctx))
        if not data:
            return
        try:
            doc, exact = codec.loads(data)
        except codec.JsonCodecError as e:
            log.warning(
                "request_transformer: %s body is not valid JSON (%s): passed through unchanged",
                ctx.route_name,
                e,
            )
            return
        rules.apply(doc, lambda v: _json_template(v).render(ctx))
        replace_request_body(ctx, codec.dumps(doc, exact))

    async def on_upstream_request(self, ctx: RequestContext) -> None:
        tpl = self.config._path
        if tpl is None:
            return
        ureq = ctx.upstream_request
        original = ctx.state.get(_ORIGINAL_PATH)
        if original is None:
            original = ctx.state[_ORIGINAL_PATH] = ureq.path
        path = tpl.render(ctx, path=original, escape=_path_escape)
        ureq.path = path if path.startswith("/") else "/" + path
