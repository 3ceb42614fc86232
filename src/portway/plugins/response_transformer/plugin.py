"""``response_transformer``: rewrite response headers, status and JSON bodies.

In ``on_response`` (response phases run in reverse binding order), in this order: the status
(``status_map``, with the standard reason phrase), header edits (remove, rename, replace,
add, append), then JSON rules. A JSON rule applies only to a JSON (``application/json`` or
``+json``) response with a body, no Content-Encoding and not a range (206); it buffers the
body through :mod:`portway.pipeline.buffering` up to ``max_body_bytes`` (a larger body fails
the exchange with 502 rather than leak what a rule removes), rewrites it and sends it with an
exact Content-Length, without ETag / Content-MD5 / digests. A body that does not parse is sent
unchanged (logged); every other response streams untouched.
"""

from __future__ import annotations

import logging
from typing import Final

from portway.pipeline.buffering import (
    BodyLimit,
    buffer_response_body,
    is_json,
    replace_response_body,
)
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._json import codec
from portway.plugins.response_transformer.config import ResponseTransformerConfig

log: Final = logging.getLogger("portway.plugins")

_NO_BODY: Final = frozenset({204, 206, 304})


class ResponseTransformerPlugin(Plugin[ResponseTransformerConfig]):
    """See the module docstring; the config keys are those of Kong's response-transformer
    plus ``status_map``. Applies to upstream responses and to gateway answers (errors) that
    pass this plugin."""

    name = "response_transformer"
    stage = Stage.transform
    Config = ResponseTransformerConfig

    def __init__(self, config: ResponseTransformerConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.limit = BodyLimit(env.settings)
        self._json = None if config.json_rules.empty else config.json_rules
        #: header-only configs never suspend: the route may stay on the task-free path
        self.sync_hooks = self._json is None

    async def on_response(self, ctx: RequestContext) -> None:
        resp = ctx.response
        if resp is None:
            return
        status_map = self.config.status_map
        if status_map:
            to = status_map.get(resp.status)
            if to is not None:
                resp.status = to
                resp.reason = b""  # the standard phrase of the new status
        if not self.config.headers.empty:
            self.config.headers.apply(resp.headers, ctx)
        if self._json is not None:
            await self._edit_body(ctx)

    async def _edit_body(self, ctx: RequestContext) -> None:
        resp = ctx.response
        assert resp is not None and self._json is not None
        if ctx.request.method == "HEAD" or resp.status in _NO_BODY or resp.status < 200:
            return
        if ctx.error is not None:
            return  # the gateway's own error body keeps its documented shape
        h = resp.headers
        if not is_json(h.get_raw(b"content-type")):
            log.debug("response_transformer: %s: not a JSON response", ctx.route_name)
            return
        enc = h.get_raw(b"content-encoding")
        if enc is not None and enc.strip().lower() != b"identity":
            log.info(
                "response_transformer: %s: %s-encoded JSON passed through unchanged",
                ctx.route_name,
                enc.decode("latin-1"),
            )
            return
        data = await buffer_response_body(ctx, self.limit.of(ctx))
        if not data:
            return
        try:
            doc, exact = codec.loads(data)
        except codec.JsonCodecError as e:
            log.warning(
                "response_transformer: %s: body is not valid JSON (%s): passed through unchanged",
                ctx.route_name,
                e,
            )
            return
        self._json.apply(doc)
        replace_response_body(resp, codec.dumps(doc, exact))
