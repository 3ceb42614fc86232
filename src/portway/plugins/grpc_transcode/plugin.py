"""``grpc_transcode``: JSON over HTTP/1.1 or HTTP/2 ↔ a gRPC upstream (after Envoy's
grpc_json_transcoder and grpc-gateway).

``on_request`` matches the request against the ``google.api.http`` bindings of the
configured services, builds the request message (body, path variables, query parameters;
:mod:`.codec`), and turns the upstream request into a gRPC call: ``POST
/package.Service/Method``, ``content-type: application/grpc``, the message framed. The
route's upstream must speak HTTP/2 (``protocol: h2c | h2``).

``on_response`` turns the gRPC answer back into JSON: a unary reply becomes one JSON
object; a server-streaming reply streams as newline-delimited JSON (``application/x-ndjson``)
or, when the client accepts ``text/event-stream``, as Server-Sent Events, one message per
line/event as it arrives. A non-OK ``grpc-status`` becomes the mapped HTTP status with the
body ``{"code", "message", "details"}`` (mid-stream: a last ``{"error": {...}}`` line).

A request matching no binding: native gRPC (``content-type: application/grpc``) passes
through untouched; anything else is answered 404.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final
from urllib.parse import unquote

from portway.errors import GatewayError, NotFoundError
from portway.http.body import BodyStream
from portway.http.grpc_status import TO_HTTP, UNKNOWN, is_grpc_request
from portway.http.headers import Headers
from portway.pipeline.buffering import (
    BodyLimit,
    buffer_request_body,
    buffer_response_body,
    replace_request_body,
    replace_response_body,
)
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._grpc.frames import COMPRESSED_FLAG, FrameError, FrameReader, frame
from portway.plugins.grpc_transcode.codec import error_json, request_message, response_json
from portway.plugins.grpc_transcode.config import GrpcTranscodeConfig
from portway.plugins.grpc_transcode.rules import Binding

log: Final = logging.getLogger("portway.plugins")

_CALL: Final[ContextKey[tuple[Binding, bool]]] = ContextKey("grpc_transcode.call")
_PUMP: Final[ContextKey[asyncio.Task[None]]] = ContextKey("grpc_transcode.pump")
#: request fields that describe the JSON representation, not the gRPC call
_DROP_REQUEST: Final = (
    b"content-type",
    b"content-length",
    b"accept",
    b"accept-encoding",
    b"grpc-encoding",
    b"grpc-accept-encoding",
)


class GrpcTranscodePlugin(Plugin[GrpcTranscodeConfig]):
    """See the module docstring."""

    name = "grpc_transcode"
    stage = Stage.transform
    Config = GrpcTranscodeConfig

    def __init__(self, config: GrpcTranscodeConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.tc = config.transcoder
        self.limit = BodyLimit(env.settings)

    async def on_request(self, ctx: RequestContext) -> None:
        req = ctx.request
        hit = self.tc.match(req.method, req.path)
        if hit is None:
            if is_grpc_request(req):
                return None  # native gRPC on the same route
            raise NotFoundError(f"no gRPC method for {req.method} {req.path}")
        b, params = hit
        limit = self.limit.of(ctx)
        body = await buffer_request_body(ctx, limit) if req.body is not None else None
        msg = request_message(
            self.tc,
            b,
            params,
            req.query,
            body,
            self.config.ignore_unknown_query_parameters,
        )
        ureq = ctx.upstream_request
        ureq.method = "POST"
        ureq.path = b.grpc_path
        ureq.query = b""
        ureq.headers.remove_many(_DROP_REQUEST)
        ureq.headers.add_raw(b"content-type", b"application/grpc")
        ureq.headers.add_raw(b"te", b"trailers")
        replace_request_body(ctx, frame(msg))
        accept = req.headers.get_raw(b"accept") or b""
        ctx.state[_CALL] = (b, b"text/event-stream" in accept)
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        call = ctx.state.get(_CALL)
        resp = ctx.response
        if call is None or resp is None or not resp.upstream:
            return  # gateway-made answers keep their JSON error body
        b, sse = call
        h = resp.headers
        head_status = h.get_raw(b"grpc-status")
        ct = h.get_raw(b"content-type") or b""
        if not ct.startswith(b"application/grpc"):
            return  # not a gRPC answer (a proxy in between, an HTTP error): as it came
        if head_status is not None:  # trailers-only: an error (or an empty stream)
            self._finish_error(ctx, h, h)
            return
        if b.method.server_streaming:
            self._stream(ctx, b, sse)
            return
        stream = resp.body
        limit = self.limit.of(ctx)
        data = await buffer_response_body(ctx, limit)
        trailers = stream.trailers if isinstance(stream, BodyStream) else None
        t = trailers if trailers is not None else Headers()
        code = _code(t)
        if code != 0:
            self._finish_error(ctx, h, t)
            return
        try:
            frames = FrameReader(limit).feed(data)
        except FrameError as e:
            raise GatewayError(str(e), status=502, code="bad_grpc_response") from None
        if len(frames) != 1 or frames[0][0] & COMPRESSED_FLAG:
            raise GatewayError(
                "upstream sent no single uncompressed message", status=502, code="bad_grpc_response"
            )
        out = response_json(self.tc, b, frames[0][1], self.config.print_options)
        _json_head(resp.headers, b"application/json")
        resp.status = 200
        resp.reason = b""
        replace_response_body(resp, out)

    def _finish_error(self, ctx: RequestContext, h: Headers, t: Headers) -> None:
        resp = ctx.response
        assert resp is not None
        code = _code(t)
        message = unquote((t.get_raw(b"grpc-message") or b"").decode("latin-1"))
        body = error_json(self.tc, code, message, t.get_raw(b"grpc-status-details-bin"))
        _json_head(h, b"application/json")
        resp.status = TO_HTTP.get(code, 500)
        resp.reason = b""
        src = resp.body
        replace_response_body(resp, body)
        if isinstance(src, BodyStream):
            # nothing to read after a trailers-only answer, but the stream must not linger
            src.set_exception(ConnectionAbortedError("replaced"))

    def _stream(self, ctx: RequestContext, b: Binding, sse: bool) -> None:
        resp = ctx.response
        assert resp is not None
        src = resp.body
        assert isinstance(src, BodyStream)
        go = asyncio.Event()
        go.set()
        out = BodyStream(go.clear, go.set)
        limit = self.limit.of(ctx)
        opts = self.config.print_options

        def emit(doc: bytes) -> None:
            out.feed(b"data: " + doc + b"\n\n" if sse else doc + b"\n")

        async def pump() -> None:
            reader = FrameReader(limit)
            try:
                while True:
                    await go.wait()
                    chunk = await src.read()
                    if not chunk:
                        break
                    for flags, message in reader.feed(chunk):
                        if flags & COMPRESSED_FLAG:
                            raise FrameError("compressed gRPC message")
                        emit(response_json(self.tc, b, message, opts))
                t = src.trailers or Headers()
                code = _code(t)
                if code != 0:
                    msg = unquote((t.get_raw(b"grpc-message") or b"").decode("latin-1"))
                    emit(b'{"error":' + error_json(self.tc, code, msg, None) + b"}")
                out.feed_eof()
            except asyncio.CancelledError:
                out.set_exception(ConnectionAbortedError("transcoding stopped"))
                raise
            except Exception as e:  # the upstream broke or sent garbage: cut the stream
                log.warning("grpc_transcode: %s: stream ended: %s", ctx.route_name, e)
                out.set_exception(ConnectionAbortedError(str(e)))

        task = asyncio.get_running_loop().create_task(pump())
        ctx.state[_PUMP] = task
        _json_head(resp.headers, b"text/event-stream" if sse else b"application/x-ndjson")
        resp.body = out
        resp.chunked = True

    def on_log(self, ctx: RequestContext) -> None:
        task = ctx.state.get(_PUMP)
        if task is not None and not task.done():
            task.cancel()  # the client went away mid-stream


def _code(t: Headers) -> int:
    raw = t.get_raw(b"grpc-status")
    if raw is None:
        return UNKNOWN
    try:
        return int(raw)
    except ValueError:
        return UNKNOWN


def _json_head(h: Headers, content_type: bytes) -> None:
    h.remove_many(
        (
            b"content-type",
            b"content-length",
            b"grpc-status",
            b"grpc-message",
            b"grpc-status-details-bin",
            b"grpc-encoding",
            b"grpc-accept-encoding",
            b"trailer",
        )
    )
    h.add_raw(b"content-type", content_type)
