"""gRPC status mapping, grpc-timeout parsing/formatting, trailers-only error responses."""

from __future__ import annotations

import orjson
import pytest

from portway.http.grpc_status import (
    encode_grpc_message,
    format_grpc_timeout,
    grpc_error_response,
    grpc_status_for_http,
    is_grpc_request,
    parse_grpc_timeout,
)
from portway.http.headers import Headers
from portway.http.models import Request, Response


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1S", 1.0),
        (b"100m", 0.1),
        (b"2H", 7200.0),
        (b"3M", 180.0),
        (b"5000u", 0.005),
        (b"99999999n", 0.099999999),
        (None, None),
        (b"", None),
        (b"S", None),
        (b"1x", None),
        (b"123456789S", None),  # at most 8 digits
        (b"-1S", None),
    ],
)
def test_parse_grpc_timeout(value: bytes | None, seconds: float | None) -> None:
    got = parse_grpc_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_format_grpc_timeout_round_trips() -> None:
    assert format_grpc_timeout(1.5) == b"1500m"
    assert format_grpc_timeout(0.0001) == b"1m"
    assert parse_grpc_timeout(format_grpc_timeout(10**6)) == 10**6
    assert len(format_grpc_timeout(10**12)) <= 9


@pytest.mark.parametrize(
    ("http", "grpc"),
    [(401, 16), (403, 7), (429, 8), (503, 14), (504, 4), (404, 12), (502, 14), (418, 2), (599, 14)],
)
def test_http_to_grpc(http: int, grpc: int) -> None:
    assert grpc_status_for_http(http) == grpc


def _req(ct: bytes) -> Request:
    return Request("POST", "/s/M", b"", Headers([(b"content-type", ct)]))


def test_error_response_is_trailers_only_and_keeps_fields() -> None:
    req = _req(b"application/grpc+proto")
    assert is_grpc_request(req) and is_grpc_request(_req(b"application/grpc-web-text"))
    assert not is_grpc_request(_req(b"application/json"))
    src = Response(
        429,
        Headers([(b"content-type", b"application/json"), (b"retry-after", b"3")]),
        orjson.dumps({"error": "rate limited 100%", "code": "rate_limited"}),
    )
    out = grpc_error_response(src, req)
    assert out.status == 200 and out.body == b""
    assert out.headers.get_raw(b"content-type") == b"application/grpc+proto"
    assert out.headers.get_raw(b"grpc-status") == b"8"
    assert out.headers.get_raw(b"grpc-message") == b"rate limited 100%25"
    assert out.headers.get_raw(b"retry-after") == b"3"


def test_grpc_message_percent_encoding() -> None:
    assert encode_grpc_message("héllo\n") == b"h%C3%A9llo%0A"
