"""``Headers.unread``: a lite head's fields built on first use, the same as the parsers'.

The server's two parsers are compared on whole requests in tests/http/test_lite_request.py
(their field lists are read there, so built); here every ``Headers`` method on headers left
unread must first build the list, and the list must be the parsers' (lower-cased names,
values without OWS either side, order and duplicates kept)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from portway.http.headers import Headers, field_list

HEAD = (
    b"GET /x HTTP/1.1\r\nHost: a\r\nuSeR-aGeNt:\tt  \r\nX-E:\r\nX-A:  1 \t\r\n"
    b"Cookie: a=1\r\ncookie: b=2\r\nACCEPT:*/*\r\n\r\n"
)
AT = len(b"GET /x HTTP/1.1\r\n")
FIELDS = [
    (b"host", b"a"),
    (b"user-agent", b"t"),
    (b"x-e", b""),
    (b"x-a", b"1"),
    (b"cookie", b"a=1"),
    (b"cookie", b"b=2"),
    (b"accept", b"*/*"),
]


def test_field_list_is_the_parsers() -> None:
    assert field_list(HEAD, AT) == FIELDS
    assert field_list(b"GET / HTTP/1.1\r\n\r\n", 16) == []


def _unread() -> Headers:
    h = Headers.unread(HEAD, AT)
    assert h.unread_head() is HEAD
    return h


CALLS: list[tuple[str, Callable[[Headers], Any], Any, list[tuple[bytes, bytes]]]] = [
    ("get_raw", lambda h: h.get_raw(b"cookie"), b"a=1", FIELDS),
    ("get", lambda h: h.get("X-A"), "1", FIELDS),
    ("get_all", lambda h: h.get_all("cookie"), ["a=1", "b=2"], FIELDS),
    ("contains", lambda h: "User-Agent" in h, True, FIELDS),
    ("len", len, len(FIELDS), FIELDS),
    ("iter", lambda h: next(iter(h)), ("host", "a"), FIELDS),
    ("copy", lambda h: h.copy().raw(), FIELDS, FIELDS),
    ("add_raw", lambda h: h.add_raw(b"x-n", b"1"), None, [*FIELDS, (b"x-n", b"1")]),
    ("add", lambda h: h.add("X-N", "1"), None, [*FIELDS, (b"x-n", b"1")]),
    (
        "set",
        lambda h: h.set("x-a", "2"),
        None,
        [kv for kv in FIELDS if kv[0] != b"x-a"] + [(b"x-a", b"2")],
    ),
    ("remove", lambda h: h.remove("cookie"), True, [kv for kv in FIELDS if kv[0] != b"cookie"]),
    (
        "remove_many",
        lambda h: h.remove_many([b"cookie", b"host"]),
        None,
        [kv for kv in FIELDS if kv[0] not in (b"cookie", b"host")],
    ),
    (
        "rename",
        lambda h: h.rename("x-e", "x-f"),
        None,
        [(b"x-f" if k == b"x-e" else k, v) for k, v in FIELDS],
    ),
    ("raw", lambda h: list(h.raw()), FIELDS, FIELDS),
]


@pytest.mark.parametrize(("name", "call", "result", "after"), CALLS, ids=[c[0] for c in CALLS])
def test_every_method_builds_the_list_first(
    name: str, call: Callable[[Headers], Any], result: Any, after: list[tuple[bytes, bytes]]
) -> None:
    h = _unread()
    assert call(h) == result
    assert h.unread_head() is None
    assert h.raw() == after
    # (a second unread instance is not touched by the first's edits)
    assert _unread().raw() == FIELDS
