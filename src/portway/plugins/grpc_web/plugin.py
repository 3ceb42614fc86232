"""``grpc_web``: gRPC-Web clients (browsers) to a native gRPC upstream, after the gRPC-Web
protocol (grpc/grpc ``doc/PROTOCOL-WEB.md``) and Envoy's grpc_web filter.

Request: ``application/grpc-web[+proto]`` bodies are gRPC frames already and stream to the
upstream unchanged; ``application/grpc-web-text[+proto]`` bodies are base64 and are decoded
(whole, up to ``max_text_request_bytes``: text clients send unary or server-streaming
calls, one message). The upstream sees ``application/grpc[+proto]`` and ``te: trailers``.

Response: message frames are relayed as they come; the upstream's trailers become a last
frame with flag ``0x80`` holding ``name:value\\r\\n`` lines (HTTP/1.1 and browsers have no
usable trailers). Text mode base64-encodes the whole body as one stream (3-byte groups are
carried between chunks, so only the end is padded). A trailers-only upstream answer stays
a headers-only response, as the protocol allows. Works over HTTP/1.1 and HTTP/2; with the
``cors`` plugin, list ``grpc-status`` and ``grpc-message`` in ``expose_headers``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Final

from portway.errors import BadRequestError
from portway.http.body import BodyStream
from portway.http.headers import Headers
from portway.pipeline.buffering import buffer_request_body, replace_request_body
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._grpc.frames import TRAILER_FLAG, frame
from portway.plugins.grpc_web.config import GrpcWebConfig

log: Final = logging.getLogger("portway.plugins")

#: the client's content type and whether it is the text (base64) variant
_MODE: Final[ContextKey[tuple[bytes, bool]]] = ContextKey("grpc_web.mode")
_PUMP: Final[ContextKey[asyncio.Task[None]]] = ContextKey("grpc_web.pump")
_WEB: Final = b"application/grpc-web"
_TEXT: Final = b"application/grpc-web-text"


def trailer_frame(trailers: Headers) -> bytes:
    """The gRPC-Web trailers frame: flag 0x80, length, ``name:value\\r\\n`` lines."""
    lines = b"".join(k.lower() + b":" + v + b"\r\n" for k, v in trailers.raw())
    return frame(lines, TRAILER_FLAG)


def decode_text(data: bytes) -> bytes:
    """Base64 of a grpc-web-text body; padded segments may be concatenated."""
    out = bytearray()
    data = b"".join(data.split())
    pos = 0
    try:
        while pos < len(data):
            end = data.find(b"=", pos)
            if end < 0:
                out += base64.b64decode(data[pos:], validate=True)
                break
            # the segment ends after its padding, at the next 4-byte boundary
            seg_end = pos + ((end - pos) // 4 + 1) * 4
            out += base64.b64decode(data[pos:seg_end], validate=True)
            pos = seg_end
    except (binascii.Error, ValueError):
        raise BadRequestError("grpc-web-text body is not base64") from None
    return bytes(out)


class GrpcWebPlugin(Plugin[GrpcWebConfig]):
    """See the module docstring."""

    name = "grpc_web"
    stage = Stage.transform
    Config = GrpcWebConfig

    def __init__(self, config: GrpcWebConfig, env: PluginEnv) -> None:
        super().__init__(config, env)

    async def on_request(self, ctx: RequestContext) -> None:
        ct = ctx.request.headers.get_raw(b"content-type")
        if ct is None:
            return None
        lower = ct.lower()
        if not lower.startswith(_WEB):
            return None
        text = lower.startswith(_TEXT)
        suffix = lower[len(_TEXT if text else _WEB) :].split(b";", 1)[0].strip()
        ctx.state[_MODE] = (ct, text)
        ureq = ctx.upstream_request
        h = ureq.headers
        h.remove_many((b"content-type", b"x-grpc-web", b"x-user-agent"))
        h.add_raw(b"content-type", b"application/grpc" + suffix)
        h.add_raw(b"te", b"trailers")
        if text and ureq.body is not None:
            data = await buffer_request_body(ctx, self.config.max_text_request_bytes)
            replace_request_body(ctx, decode_text(data or b""))
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        mode = ctx.state.get(_MODE)
        resp = ctx.response
        if mode is None or resp is None or not resp.upstream:
            return  # gateway-made errors are already trailers-only gRPC answers
        _, text = mode
        h = resp.headers
        ct = h.get_raw(b"content-type") or b""
        if not ct.startswith(b"application/grpc"):
            return
        h.remove_many((b"content-type", b"content-length", b"trailer"))
        # as Envoy: the message format is protobuf whatever the upstream's subtype said
        h.add_raw(b"content-type", (_TEXT if text else _WEB) + b"+proto")
        src = resp.body
        if not isinstance(src, BodyStream):
            return  # trailers-only: grpc-status is in the headers
        go = asyncio.Event()
        go.set()
        out = BodyStream(go.clear, go.set)

        async def pump() -> None:
            carry = b""

            def put(data: bytes, last: bool = False) -> None:
                nonlocal carry
                if not text:
                    out.feed(data)
                    return
                data = carry + data
                cut = len(data) if last else len(data) - len(data) % 3
                carry = data[cut:]
                if cut:
                    out.feed(base64.b64encode(data[:cut]))

            try:
                while True:
                    await go.wait()
                    chunk = await src.read()
                    if not chunk:
                        break
                    put(chunk)
                put(trailer_frame(src.trailers or Headers()), last=True)
                out.feed_eof()
            except asyncio.CancelledError:
                out.set_exception(ConnectionAbortedError("grpc-web relay stopped"))
                raise
            except Exception as e:
                log.warning("grpc_web: %s: upstream body failed: %s", ctx.route_name, e)
                out.set_exception(ConnectionAbortedError(str(e)))

        ctx.state[_PUMP] = asyncio.get_running_loop().create_task(pump())
        resp.body = out
        resp.chunked = True

    def on_log(self, ctx: RequestContext) -> None:
        task = ctx.state.get(_PUMP)
        if task is not None and not task.done():
            task.cancel()
