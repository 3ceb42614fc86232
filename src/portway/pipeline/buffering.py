"""Bounded whole-body buffering for plugins that need a complete JSON body (DESIGN.md §7).

Bodies stream by default. A plugin that must see a whole body (validation, JSON rewrites,
aggregation merges) asks this module for it instead of collecting ``on_response_chunk``:

- :func:`buffer_request_body` (in ``on_request``) reads the client's body once, up to the
  limit (413 beyond it; a declared Content-Length over the limit is refused before a byte is
  read), answers ``Expect: 100-continue`` first, and puts the bytes back as the upstream
  request's body with an exact Content-Length. Later plugins get the same bytes without
  reading again; :func:`replace_request_body` swaps in rewritten bytes.
- :func:`buffer_response_body` (in ``on_response``) reads the upstream's body up to the limit
  and turns the response into a ``bytes`` response: the handler then writes it with an exact
  Content-Length (no chunking) and releases the upstream connection as for any fully read
  body. :func:`replace_response_body` swaps in rewritten bytes and drops the validators that
  described the old representation (ETag, Content-MD5, digests).

The limit (:class:`BodyLimit`) is the route's ``max_body_bytes``, else
``server.limits.max_body_bytes``, else :data:`DEFAULT_MAX_BODY`: nothing is ever held above it.
"""

from __future__ import annotations

from typing import Any, Final

from portway.errors import (
    BadRequestError,
    GatewayError,
    PayloadTooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)
from portway.http.body import BodyStream
from portway.http.models import Response
from portway.pipeline.context import ContextKey, RequestContext

#: the cap when neither the route nor the server sets ``max_body_bytes``
DEFAULT_MAX_BODY: Final = 8 * 1024 * 1024
#: fields describing the old bytes of a rewritten response (RFC 9110 §8.8, RFC 9530)
STALE_VALIDATORS: Final = (b"etag", b"content-md5", b"digest", b"content-digest", b"repr-digest")

_REQUEST_BODY: Final[ContextKey[bytes]] = ContextKey("buffering.request_body")


class UpstreamBodyTooLargeError(GatewayError):
    """A response body a plugin must rewrite is larger than the buffering limit: relaying it
    unrewritten would skip the policy (e.g. a field removal), so the exchange fails."""

    status = 502
    code = "upstream_body_too_large"


class BodyLimit:
    """The buffering limit for a binding: resolved per request from the matched route (a
    global binding serves routes with different limits)."""

    __slots__ = ("server",)

    def __init__(self, settings: Any = None) -> None:
        limits = getattr(getattr(settings, "server", None), "limits", None)
        server = getattr(limits, "max_body_bytes", None)
        self.server: int = server if isinstance(server, int) else DEFAULT_MAX_BODY

    def of(self, ctx: RequestContext) -> int:
        m = ctx.match
        if m is not None:
            route_limit = m.route.max_body_bytes
            if route_limit is not None:
                return int(route_limit)
        return self.server


def media_type(content_type: bytes | None) -> bytes:
    """The lower-cased media type of a Content-Type value (``b""`` when absent)."""
    if not content_type:
        return b""
    return content_type.split(b";", 1)[0].strip().lower()


def is_json(content_type: bytes | None) -> bool:
    """``application/json`` or any ``+json`` structured suffix (RFC 6839)."""
    mt = media_type(content_type)
    return mt == b"application/json" or (mt.startswith(b"application/") and mt.endswith(b"+json"))


def _send_continue(ctx: RequestContext) -> None:
    ureq = ctx.upstream_request
    if not ureq.expect_continue:
        return
    ureq.expect_continue = False  # the forwarder must not send a second one
    conn = ctx.extra.get("_client")
    body = ctx.request.body
    # (a client that sent its whole body already is not waiting for it)
    if conn is not None and ctx.request.version != "1.0" and body is not None and not body.complete:
        conn.send_info(100, b"Continue", [])


async def buffer_request_body(ctx: RequestContext, limit: int) -> bytes | None:
    """The whole request body (``None`` when the request has none), read at most once per
    request; raise :class:`PayloadTooLargeError` (413) beyond ``limit`` bytes."""
    cached = ctx.state.get(_REQUEST_BODY)
    if cached is not None:
        return cached
    ureq = ctx.upstream_request
    body = ureq.body
    if body is None:
        return None
    if ureq.content_length is not None and ureq.content_length > limit:
        raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    _send_continue(ctx)
    try:
        data = await body.read_all(limit)
    except ConnectionError:
        # the client left mid-body: its failure, not a plugin's (no 500, no traceback)
        raise BadRequestError(
            "client closed the connection while sending the body", code="client_disconnected"
        ) from None
    replace_request_body(ctx, data)
    return data


def replace_request_body(ctx: RequestContext, data: bytes) -> None:
    """Make ``data`` the body sent upstream (framing is set from it by the forwarder)."""
    ureq = ctx.upstream_request
    ureq.body = BodyStream.of(data)
    ureq.content_length = len(data)
    ctx.state[_REQUEST_BODY] = data


async def buffer_response_body(ctx: RequestContext, limit: int) -> bytes:
    """The whole body of ``ctx.response``, which becomes a ``bytes`` response; raise
    :class:`UpstreamBodyTooLargeError` (502) beyond ``limit`` bytes, before reading when the
    Content-Length says so."""
    resp = ctx.response
    assert resp is not None
    body = resp.body
    if isinstance(body, bytes):
        return body
    declared = resp.headers.get_raw(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UpstreamBodyTooLargeError(f"response body exceeds {limit} bytes", source="upstream")
    try:
        data = await body.read_all(limit)
    except PayloadTooLargeError:
        raise UpstreamBodyTooLargeError(
            f"response body exceeds {limit} bytes", source="upstream"
        ) from None
    except TimeoutError:
        raise UpstreamTimeoutError("upstream response body timed out", source="upstream") from None
    except ConnectionError:
        raise UpstreamError(
            "upstream closed the connection while sending the body", source="upstream"
        ) from None
    # (a bytes response is sent with Content-Length: trailers of a chunked body are dropped)
    _bytes_body(resp, data)
    return data


def replace_response_body(resp: Response, data: bytes) -> None:
    """Make ``data`` the response body; drop validators of the old representation."""
    resp.headers.remove_many(STALE_VALIDATORS)
    _bytes_body(resp, data)


def _bytes_body(resp: Response, data: bytes) -> None:
    # the handler writes Content-Length itself for a bytes body; the old framing goes
    resp.headers.remove_many((b"content-length", b"transfer-encoding"))
    resp.body = data
    resp.chunked = False
