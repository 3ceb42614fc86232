"""gRPC-Web framing helpers (pure logic)."""

from __future__ import annotations

import base64

import pytest

from portway.errors import BadRequestError
from portway.http.headers import Headers
from portway.plugins._grpc.frames import FrameError, FrameReader, frame
from portway.plugins.grpc_web.plugin import decode_text, trailer_frame


def test_trailer_frame_bytes() -> None:
    t = Headers([(b"grpc-status", b"0"), (b"Grpc-Message", b"ok")])
    assert trailer_frame(t) == b"\x80\x00\x00\x00\x20grpc-status:0\r\ngrpc-message:ok\r\n"


def test_decode_text_concatenated_padded_segments() -> None:
    a, b = frame(b"ab"), frame(b"xyz1")
    data = base64.b64encode(a) + base64.b64encode(b)
    assert decode_text(data) == a + b
    assert decode_text(base64.b64encode(a + b)) == a + b
    with pytest.raises(BadRequestError):
        decode_text(b"!!!!")


def test_frame_reader_incremental_and_limit() -> None:
    r = FrameReader(limit=10)
    data = frame(b"hello") + frame(b"w", 0x80)
    assert r.feed(data[:3]) == []
    assert r.feed(data[3:8]) == []
    assert r.feed(data[8:]) == [(0, b"hello"), (0x80, b"w")]
    assert not r.pending
    with pytest.raises(FrameError):
        FrameReader(limit=4).feed(frame(b"hello"))
