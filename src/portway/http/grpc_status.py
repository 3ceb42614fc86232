"""gRPC wire rules shared by pass-through, transcoding and gRPC-Web: status mapping,
``grpc-timeout`` and gateway-made errors as trailers-only responses.

Mappings follow the gRPC spec's ``doc/http-grpc-status-mapping.md`` (HTTP → gRPC, for errors
the gateway makes) and ``google/rpc/code.proto`` / grpc-gateway (gRPC → HTTP, for
transcoding).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from portway.http.headers import Headers
from portway.http.models import Request, Response

OK: Final = 0
CANCELLED: Final = 1
UNKNOWN: Final = 2
INVALID_ARGUMENT: Final = 3
DEADLINE_EXCEEDED: Final = 4
NOT_FOUND: Final = 5
PERMISSION_DENIED: Final = 7
RESOURCE_EXHAUSTED: Final = 8
UNIMPLEMENTED: Final = 12
INTERNAL: Final = 13
UNAVAILABLE: Final = 14
UNAUTHENTICATED: Final = 16

#: HTTP status of a gateway-made error → gRPC status
_FROM_HTTP: Final = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED,
    413: RESOURCE_EXHAUSTED,
    429: RESOURCE_EXHAUSTED,
    431: RESOURCE_EXHAUSTED,
    500: INTERNAL,
    501: UNIMPLEMENTED,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}

#: gRPC status → HTTP status (google.rpc.Code's documented HTTP mapping)
TO_HTTP: Final = {
    0: 200,
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}

_TIMEOUT_UNITS: Final = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}


def grpc_status_for_http(status: int) -> int:
    """The gRPC status a client should see for a gateway-made HTTP ``status``."""
    s = _FROM_HTTP.get(status)
    if s is not None:
        return s
    return UNAVAILABLE if status >= 500 else UNKNOWN


def is_grpc_request(req: Request) -> bool:
    """``content-type: application/grpc`` (any ``+proto``/``+json`` suffix or grpc-web)."""
    ct = req.headers.get_raw(b"content-type")
    return ct is not None and ct[:16].lower() == b"application/grpc"


def parse_grpc_timeout(value: bytes | None) -> float | None:
    """Seconds of a ``grpc-timeout`` value (``1*8DIGIT unit``), None when absent or bad."""
    if value is None or not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    return None if unit is None else int(value[:-1]) * unit


def format_grpc_timeout(seconds: float) -> bytes:
    """A ``grpc-timeout`` value for ``seconds`` (milliseconds, or seconds when too long)."""
    ms = max(1, int(seconds * 1000))
    if ms < 100_000_000:
        return b"%dm" % ms
    return b"%dS" % min(99_999_999, int(seconds))


def encode_grpc_message(message: str) -> bytes:
    """Percent-encoding of ``grpc-message`` (spec: ASCII printable except ``%``)."""
    return quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode("ascii")


def grpc_error_response(resp: Response, req: Request) -> Response:
    """A gateway-made error ``resp`` (JSON body, 4xx/5xx) as a gRPC trailers-only response:
    HTTP 200, the request's content-type, ``grpc-status`` and ``grpc-message``, no body.
    Other headers (Retry-After, WWW-Authenticate, CORS, X-Request-ID) are kept."""
    message = _message_of(resp)
    ct = req.headers.get_raw(b"content-type") or b"application/grpc"
    h = Headers(
        [
            (k, v)
            for k, v in resp.headers.raw()
            if k not in (b"content-type", b"content-length", b"content-encoding")
        ]
    )
    h.remove_many((b"grpc-status", b"grpc-message"))
    h.add_raw(b"content-type", ct)
    h.add_raw(b"grpc-status", b"%d" % grpc_status_for_http(resp.status))
    h.add_raw(b"grpc-message", encode_grpc_message(message))
    return Response(200, h, b"")


def _message_of(resp: Response) -> str:
    body = resp.body
    if isinstance(body, bytes) and body[:1] == b"{":
        import orjson

        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            msg = data.get("error") or data.get("message")
            if isinstance(msg, str):
                return msg
    return f"HTTP {resp.status}"
