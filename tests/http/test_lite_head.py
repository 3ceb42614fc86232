"""The lite head scan (``portway.http.rawhead.special_length``) and the
lazy parse of relayed response fields (``portway.http.models.parse_fields``): pure logic."""

from __future__ import annotations

import pytest

from portway.http.models import Response, parse_fields
from portway.http.rawhead import SPECIAL, RawHead, first_bytes, scan_head, special_length


@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_every_special_name_is_caught_in_any_case(name: bytes) -> None:
    for spelled in (name, name.upper(), name.title()):
        line = spelled + b": v"
        assert special_length(line, len(line)) == len(name)


@pytest.mark.parametrize(
    "line",
    [
        b"Content-Type: text/plain",
        b"Date: Wed, 02 Dec 2026 12:00:00 GMT",
        b"Server: nginx",
        b"T: x",
        b"Tx:",
        b"Vary: te",
        b"Cache-Control: no-cache: x",
        b"X-Connection: close",
    ],
)
def test_ordinary_names_are_passed_over(line: bytes) -> None:
    n = special_length(line, len(line))
    # either no candidate at all, or one whose name is not special (the caller checks)
    assert n == 0 or line[:n].lower() not in SPECIAL


def test_parse_fields_lowercases_names_and_trims_values() -> None:
    runs = [b"Server: up\r\nX-A:\tb \t\r\n", b"Empty:\r\nX-Colon: a:b\r\n"]
    assert parse_fields(runs) == [
        (b"server", b"up"),
        (b"x-a", b"b"),
        (b"empty", b""),
        (b"x-colon", b"a:b"),
    ]


def test_response_headers_are_parsed_on_first_read_and_then_kept() -> None:
    r = Response(200, None, b"", b"OK", False, True)
    r.set_raw_fields([b"Server: up\r\n"], [(b"content-length", b"2")])
    h = r.headers
    assert h.raw() == [(b"server", b"up"), (b"content-length", b"2")]
    h.set("x-added", "1")
    assert r.headers is h and r.headers.get("x-added") == "1"


def test_assigned_headers_replace_raw_fields() -> None:
    from portway.http.headers import Headers

    r = Response(200)
    r.set_raw_fields([b"Server: up\r\n"], [])
    r.headers = Headers([(b"a", b"b")])
    assert r.headers.raw() == [(b"a", b"b")]
    assert Response(204).headers.raw() == []


def _scan(buf: bytes, head_only: bool, out: RawHead) -> tuple[object, ...]:
    scan_head(buf, head_only, out)
    return (
        out.status,
        out.reason,
        list(out.fields),
        out.content_length,
        out.keep_alive,
        out.close_delimited,
        out.lines,
    )


HEAD_A = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"
HEAD_B = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\n"
HEAD_C = b"HTTP/1.1 204 No Content\r\nServer: up\r\n\r\n"


@pytest.mark.parametrize(
    "sequence",
    [
        [(HEAD_A + b"abc", False), (HEAD_A + b"abc", False)],
        [(HEAD_A + b"abc", False), (HEAD_B + b"abcd", False), (HEAD_A + b"abc", False)],
        [(HEAD_A + b"abc", False), (HEAD_A, True), (HEAD_A + b"abc", False)],
        [(HEAD_C, False), (HEAD_A + b"abc", False), (HEAD_C + b"HTTP/1.1", False)],
        # the last head as a prefix of a longer one is no match (it ends with the empty line)
        [(HEAD_C, False), (HEAD_C[:-2] + b"X-A: b\r\n\r\n", False)],
    ],
)
def test_a_remembered_head_scans_as_a_fresh_one(sequence: list[tuple[bytes, bool]]) -> None:
    out = RawHead()
    for buf, head_only in sequence:
        assert _scan(buf, head_only, out) == _scan(buf, head_only, RawHead())


def test_a_remembered_head_hands_out_its_runs_again_and_says_so() -> None:
    # the runs are never mutated (``ResponseSink.on_head_raw``): a repeat hands the same list
    out = RawHead()
    scan_head(HEAD_A + b"abc", False, out)
    first = out.fields
    assert out.again is False and first is out.last_fields
    scan_head(HEAD_A + b"abc", False, out)
    assert out.fields is first and out.again is True
    assert b"".join(out.fields) == b"Server: up\r\nContent-Length: 3\r\n"
    scan_head(HEAD_C, False, out)  # another head: scanned, not a repeat
    assert out.again is False and out.fields is not first


@pytest.mark.parametrize(
    ("line", "seen"),
    [
        (b"X-Request-ID: up", True),
        (b"x-request-id:up", True),
        (b"RateLimit: 1", True),
        (b"X-Request-Idx: up", False),
        (b"X-Other: 1", False),
        (b"Date: today", False),
    ],
)
def test_the_scanner_tells_whether_a_watched_name_is_there(line: bytes, seen: bool) -> None:
    names = frozenset({b"x-request-id", b"ratelimit"})
    head = RawHead()
    head.watch(names, first_bytes(names))
    buf = b"HTTP/1.1 200 OK\r\nServer: up\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n"
    scan_head(buf, False, head)
    assert head.seen is seen
    assert b"".join(head.fields) == buf[buf.index(b"\r\n") + 2 : -2]  # the lines as they are
    head.watch(None, b"")
    scan_head(buf, False, head)
    assert head.seen is False
