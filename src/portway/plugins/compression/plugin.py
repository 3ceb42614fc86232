"""``compression``: compress response bodies as they stream, negotiated per request."""

from __future__ import annotations

from typing import Final

from portway.http.models import Response
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._http.vary import add_vary
from portway.plugins.compression.codecs import Encoder, EncoderFactory
from portway.plugins.compression.config import CompressionConfig
from portway.plugins.compression.negotiate import (
    choose,
    has_no_transform,
    type_allowed,
    weaken_etag,
)

_ENCODER: Final = ContextKey[Encoder]("compression.encoder")
#: statuses whose body is absent or must not be re-encoded (206: ranges of the identity body)
_SKIP_STATUS: Final = frozenset({204, 206, 304})


class CompressionPlugin(Plugin[CompressionConfig]):
    """Compresses a response with the best coding the client accepts (see
    :func:`~portway.plugins.compression.negotiate.choose`) when the response is eligible:
    not HEAD, status not 1xx/204/206/304, no Content-Encoding or Content-Range yet, no
    ``Cache-Control: no-transform``, media type in ``types``, and a Content-Length (if known)
    of at least ``min_size``. Eligible responses get ``Vary: Accept-Encoding`` whether or not
    this client was sent a compressed one. A compressed response loses Content-Length (it is
    re-framed as chunked), Accept-Ranges, and has its ETag weakened (``W/"…"``); each body
    chunk is compressed and flushed as it passes, so nothing is buffered.

    With the ``cache`` plugin on the same route (stage traffic, so it comes before this one),
    the cache sees the encoded response and its ``Vary: Accept-Encoding``: it stores one
    variant per Accept-Encoding value and never serves an encoded body to a client that did
    not ask for that encoding."""

    name = "compression"
    stage = Stage.transform
    Config = CompressionConfig

    def __init__(self, config: CompressionConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._factories: dict[str, EncoderFactory] = {
            a: EncoderFactory(a, config.level) for a in config.algorithms
        }

    def _eligible(self, ctx: RequestContext, resp: Response) -> bool:
        if ctx.request.method == "HEAD" or resp.status < 200 or resp.status in _SKIP_STATUS:
            return False
        h = resp.headers
        ce = h.get_raw(b"content-encoding")
        if ce is not None and ce.strip().lower() != b"identity":
            return False
        if h.get_raw(b"content-range") is not None:
            return False
        if not type_allowed(h.get("content-type"), self.config.types):
            return False
        if has_no_transform(h.get_all(b"cache-control")):
            return False
        body = resp.body
        if isinstance(body, bytes):
            return len(body) >= self.config.min_size
        cl = h.get_raw(b"content-length")
        if cl is not None:
            try:
                return int(cl) >= self.config.min_size
            except ValueError:
                return False
        return True

    async def on_response(self, ctx: RequestContext) -> None:
        resp = ctx.response
        if resp is None:
            return
        if not self._eligible(ctx, resp):
            if ctx.request.method == "HEAD" and resp.status == 200:
                # a GET of the same resource may be compressed: caches must know it varies
                add_vary(resp.headers, "Accept-Encoding")
            return
        h = resp.headers
        add_vary(h, "Accept-Encoding")
        algo = choose(ctx.request.headers.get("accept-encoding"), self.config.algorithms)
        if algo is None:
            return
        h.remove(b"content-encoding")
        h.set("content-encoding", algo)
        h.remove(b"content-length")
        h.remove(b"accept-ranges")
        etag = h.get("etag")
        if etag is not None:
            h.set("etag", weaken_etag(etag))
        ctx.state[_ENCODER] = self._factories[algo].new()

    async def on_response_chunk(self, ctx: RequestContext, chunk: bytes, end: bool) -> bytes:
        enc = ctx.state.get(_ENCODER)
        if enc is None:
            return chunk
        if end:
            ctx.state.pop(_ENCODER)
            return enc.finish(chunk)
        if not chunk:
            return b""
        return enc.chunk(chunk)
