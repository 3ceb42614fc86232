"""The task-free path serialises the upstream fields itself (``forward_header_lines``, with
remembered X-Forwarded-* bytes); it must send exactly what ``forward_header_items`` decides."""

from __future__ import annotations

import pytest

from portway.http.forwarded import ForwardMemo
from portway.http.forwarding import forward_header_items, forward_header_lines
from portway.http.headers import Headers
from portway.http.models import Request

CASES: list[list[tuple[bytes, bytes]]] = [
    [(b"host", b"api.example.com"), (b"accept", b"*/*")],
    [(b"host", b"a"), (b"connection", b"keep-alive, x-drop"), (b"x-drop", b"1"), (b"te", b"x")],
    [(b"host", b"a"), (b"x-forwarded-for", b"10.0.0.1"), (b"via", b"1.1 edge")],
    [(b"host", b"a"), (b"x-forwarded-proto", b"https"), (b"x-real-ip", b"9.9.9.9")],
    [(b"accept", b"*/*")],  # HTTP/1.0 without Host
    [(b"host", b"a"), (b"content-length", b"0"), (b"keep-alive", b"timeout=5")],
    # the one-pass form's own branches: plain Connection values, a field named "close",
    # Upgrade, a second Connection field, Proxy-Authorization, untrusted forwarding fields
    [(b"host", b"a"), (b"connection", b"close"), (b"close", b"x"), (b"accept", b"1")],
    [(b"host", b"a"), (b"connection", b"Keep-Alive"), (b"connection", b"close")],
    [(b"host", b"a"), (b"connection", b"upgrade"), (b"upgrade", b"websocket")],
    [(b"host", b"a"), (b"proxy-authorization", b"x"), (b"expect", b"100-continue")],
    [(b"x-forwarded-host", b"h"), (b"host", b"a"), (b"x-forwarded-port", b"1"), (b"a", b"b")],
    [(b"host", b"a"), (b"host", b"b")],
]


def _request(trusted: bool, version: str) -> Request:
    return Request(
        "GET",
        "/x",
        b"",
        Headers(),
        version=version,
        client_ip="10.1.1.1" if trusted else "127.0.0.1",
        peer_ip="127.0.0.1",
        trusted_peer=trusted,
        server_port=8080,
    )


def _serialised(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(k + b": " + v + b"\r\n" for k, v in items)


@pytest.mark.parametrize("raw", CASES)
@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("new_host", [None, b"backend:9000"])
@pytest.mark.parametrize("via", [None, b"portway"])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_lines_equal_items(
    raw: list[tuple[bytes, bytes]],
    trusted: bool,
    new_host: bytes | None,
    via: bytes | None,
    version: str,
) -> None:
    req = _request(trusted, version)
    expected = _serialised(forward_header_items(req, list(raw), via, new_host))
    memo = ForwardMemo()
    for i in range(4):  # later times from the shared memo, then the connection's memo
        parts: list[bytes] = []
        forward_header_lines(req, list(raw), via, new_host, parts, memo if i > 1 else None)
        assert b"".join(parts) == expected


def test_connection_memo_follows_what_the_bytes_depend_on() -> None:
    # one connection's memo, requests that differ in Host, version, Via name and client
    memo = ForwardMemo()
    for version in ("1.1", "1.0", "1.1"):
        for via in (b"portway", None, b"edge"):
            for host in (b"one.example", b"two.example", b"one.example"):
                for trusted in (False, True, False):
                    req = _request(trusted, version)
                    raw = [(b"host", host), (b"accept", b"*/*")]
                    expected = _serialised(forward_header_items(req, list(raw), via, None))
                    parts: list[bytes] = []
                    forward_header_lines(req, list(raw), via, None, parts, memo)
                    assert b"".join(parts) == expected


def test_remembered_bytes_follow_the_host() -> None:
    req = _request(False, "1.1")
    for host in (b"one.example", b"two.example"):
        parts: list[bytes] = []
        forward_header_lines(req, [(b"host", host)], b"portway", None, parts)
        assert b"x-forwarded-host: " + host + b"\r\n" in b"".join(parts)


#: field edits a hook may leave pending (``RequestContext.edit_upstream_fields``): names to
#: drop, fields to add — some the forwarding rules look at (Host, Connection, Via, ...)
EDITS: list[tuple[frozenset[bytes] | None, list[tuple[bytes, bytes]]]] = [
    (frozenset({b"apikey", b"x-consumer-id"}), [(b"x-consumer-id", b"7"), (b"x-c", b"a")]),
    (None, [(b"x-request-id", b"abc")]),
    (frozenset({b"host"}), [(b"host", b"other")]),
    (frozenset({b"accept"}), [(b"connection", b"close")]),
    (frozenset({b"x"}), [(b"via", b"1.1 hook"), (b"x-forwarded-for", b"1.2.3.4")]),
    (frozenset({b"connection", b"te"}), [(b"te", b"trailers"), (b"upgrade", b"h2c")]),
    (frozenset(), []),
]


@pytest.mark.parametrize("raw", CASES[:4] + CASES[6:9] + [[(b"apikey", b"k"), (b"host", b"h")]])
@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("new_host", [None, b"backend:9000"])
def test_a_pending_edit_is_written_as_the_edited_fields(
    raw: list[tuple[bytes, bytes]],
    edit: tuple[frozenset[bytes] | None, list[tuple[bytes, bytes]]],
    trusted: bool,
    new_host: bytes | None,
) -> None:
    """The head writer applies a pending field edit while it writes: the same bytes as the
    edited list written without one, with the added fields serialised by the hook
    (``plain_lines``, when it may) or not."""
    from portway.http.forwarding import plain_lines

    drop, add = edit
    req = _request(trusted, "1.1")
    edited = [kv for kv in raw if drop is None or kv[0] not in drop] + add
    expected = _serialised(forward_header_items(req, list(edited), b"portway", new_host))
    for lines in {None, plain_lines(add)}:
        memo = ForwardMemo()
        for i in range(3):
            parts: list[bytes] = []
            forward_header_lines(
                req, list(raw), b"portway", new_host, parts, memo if i else None, drop, add, lines
            )
            assert b"".join(parts) == expected


def test_plain_lines_only_for_fields_the_rules_pass_as_they_are() -> None:
    from portway.http.forwarding import plain_lines

    assert (
        plain_lines([(b"x-consumer-id", b"7"), (b"x-a", b"")]) == b"x-consumer-id: 7\r\nx-a: \r\n"
    )
    assert plain_lines([]) == b""
    for name in (b"host", b"connection", b"via", b"x-forwarded-for", b"te", b"content-length"):
        assert plain_lines([(b"x-a", b"1"), (name, b"v")]) is None
