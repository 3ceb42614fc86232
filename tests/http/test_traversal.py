"""Path traversal, as a scanner would probe it: a route on the ``/public`` prefix must never
forward anything outside ``/public``, and what is forwarded must mean the same to an upstream
that normalises again (single decoding, idempotent normalisation)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portway.errors import BadRequestError
from portway.http.path import normalize_path
from tests.helpers import run_gateway
from tests.http.adv_helpers import exchange, parse_responses, raw_upstream


def _public_cfg(url: str, **route: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"name": "pub", "match": {"paths": ["/public"]}, "upstream": "u"}
    r.update(route)
    return {"upstreams": {"u": {"targets": [{"url": url}]}}, "routes": [r]}


def _req(target: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


# raw target -> (status, target the upstream receives or None)
CASES: dict[bytes, tuple[int, bytes | None]] = {
    b"/public/../admin": (404, None),
    b"/public/%2e%2e/admin": (404, None),
    b"/public/%2E%2E/admin": (404, None),
    b"/public/.%2e/admin": (404, None),
    b"/public/%2e./admin": (404, None),
    b"/public/./../../admin": (404, None),
    b"/public/a/../../admin": (404, None),
    b"/public/a/%2e%2e/%2e%2e/admin": (404, None),
    b"/public/..": (404, None),
    b"//public/../admin": (404, None),
    b"/PUBLIC/../admin": (404, None),
    b"http://a/public/../admin": (404, None),
    # double encoding is decoded once only: %252e stays a literal "%2e", not a dot
    b"/public/%252e%252e/admin": (200, b"/public/%252e%252e/admin"),
    b"/public/%25%32%65%25%32%65/admin": (200, b"/public/%252e%252e/admin"),
    b"/public/%252e%252e%252fadmin": (200, b"/public/%252e%252e%252fadmin"),
    # Tomcat/Jetty read "..;" as ".." once path parameters are stripped: refused
    b"/public/..;/admin": (400, None),
    b"/public/..;x=1/admin": (400, None),
    b"/public/.;/admin": (400, None),
    b"/public/%2e%2e;/admin": (400, None),
    b"/public/..%3b/admin": (200, b"/public/..%3B/admin"),  # an encoded ";" is data
    b"/public/a;v=1/b": (200, b"/public/a;v=1/b"),
    # backslashes and encoded separators
    b"/public\\..\\admin": (400, None),
    b"/public/..\\admin": (400, None),
    b"/public/%5c..%5cadmin": (400, None),
    b"/public/..%2fadmin": (400, None),
    b"/public%2f..%2fadmin": (404, None),  # one segment, not under /public
    b"/public/%2e%2e%2fadmin": (400, None),
    # overlong / non-standard encodings of "." and "/"
    b"/public/%c0%ae%c0%ae/admin": (400, None),
    b"/public/%c0%af../admin": (400, None),
    b"/public/%e0%80%ae%e0%80%ae/admin": (400, None),
    b"/public/%f0%80%80%ae/admin": (400, None),
    b"/public/%c1%9c": (400, None),
    b"/public/%ed%a0%80": (400, None),  # UTF-16 surrogate
    b"/public/%u002e%u002e/admin": (400, None),
    b"/public/%%32%65": (400, None),
    b"/public/%2": (400, None),
    b"/public/%zz": (400, None),
    # NUL
    b"/public/%00/admin": (400, None),
    b"/public/..%00/admin": (400, None),
    b"/public/a%00.html": (400, None),
    # well-formed paths still pass, normalised
    b"/public/./a//b/": (200, b"/public/a/b/"),
    b"/public/a/..": (200, b"/public/"),
    b"/public/.../x": (200, b"/public/.../x"),
    b"/public/%7euser/%41": (200, b"/public/~user/A"),
    b"/public/caf%C3%A9": (200, b"/public/caf%C3%A9"),
    b"/public/x?f=../../etc/passwd": (200, b"/public/x?f=../../etc/passwd"),
}


@pytest.mark.parametrize("target", sorted(CASES), ids=lambda t: t.decode("latin-1"))
async def test_traversal_case(target: bytes) -> None:
    status, forwarded = CASES[target]
    async with raw_upstream() as up, run_gateway(_public_cfg(up.url)) as gw:
        out, _ = await exchange(gw.port, _req(target))
        resps = parse_responses(out)
        assert resps[0].status == status, out
        if forwarded is None:
            assert up.messages == []
        else:
            assert [m.target for m in up.messages] == [forwarded]


async def test_literal_nul_and_long_paths() -> None:
    async with raw_upstream() as up, run_gateway(_public_cfg(up.url)) as gw:
        out, _ = await exchange(gw.port, _req(b"/public/a\x00b"))
        assert parse_responses(out)[0].status == 400
        out, _ = await exchange(gw.port, _req(b"/public/" + b"a" * 9000))
        assert parse_responses(out)[0].status == 414
        climb = b"/public/" + b"../" * 2000 + b"admin"
        out, _ = await exchange(gw.port, _req(climb))
        assert parse_responses(out)[0].status == 404
        deep = b"/public/" + b"a/" * 3000
        out, _ = await exchange(gw.port, _req(deep))
        assert parse_responses(out)[0].status == 200
        assert up.messages[-1].target == deep
        assert len(up.messages) == 1


async def test_prefix_is_matched_on_segment_boundary() -> None:
    async with raw_upstream() as up, run_gateway(_public_cfg(up.url)) as gw:
        for target in (b"/publicity", b"/public-admin", b"/public..", b"/public%2e%2e"):
            out, _ = await exchange(gw.port, _req(target))
            assert parse_responses(out)[0].status == 404, target
        assert up.messages == []


async def test_strip_prefix_cannot_climb_out() -> None:
    async with raw_upstream() as up, run_gateway(_public_cfg(up.url, strip_prefix=True)) as gw:
        for target, want in (
            (b"/public/a/../b", b"/b"),
            (b"/public/%2e%2e/admin", None),
            (b"/public/..%2f..%2fadmin", None),
            (b"/public", b"/"),
            (b"/public/", b"/"),
        ):
            out, _ = await exchange(gw.port, _req(target))
            status = parse_responses(out)[0].status
            if want is None:
                assert status in (400, 404), (target, out)
            else:
                assert status == 200, (target, out)
                assert up.messages[-1].target == want


# --- properties ---------------------------------------------------------------------------

_SEGMENTS = [
    "..",
    ".",
    "",
    "%2e",
    "%2E%2e",
    ".%2e",
    "%2e.",
    "%252e%252e",
    "a",
    "b%20c",
    "..;",
    "..%3b",
    ";x",
    "%c0%ae",
    "%5c",
    "%2f",
    "\\",
    "%00",
    "%7e",
    "...",
    "%25",
    "%",
]

_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")


def _decode_unreserved(path: str) -> str:
    return re.sub(
        "%([0-9A-Fa-f]{2})",
        lambda m: (
            chr(int(m[1], 16))
            if chr(int(m[1], 16)).isalnum() or chr(int(m[1], 16)) in "-._~"
            else m[0]
        ),
        path,
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=8))
def test_normalisation_is_idempotent_and_dot_free(segs: list[str]) -> None:
    raw = ("/public/" + "/".join(segs)).encode()
    try:
        out = normalize_path(raw, allow_encoded_slashes=True)
    except BadRequestError:
        return
    # an upstream normalising again reaches the same resource
    assert normalize_path(out.encode(), allow_encoded_slashes=True) == out
    decoded = _decode_unreserved(out)
    assert not _DOT_SEGMENT.search(decoded), out
    # after one full decode no "./" trick remains either (unless it is encoded data like %2F)
    if "%2F" not in out and "%5C" not in out and "%25" not in out:
        full = unquote_to_bytes(out)
        assert not re.search(rb"(^|/)\.{1,2}(/|$)", full), out


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=6))
async def test_public_prefix_never_escapes(segs: list[str]) -> None:
    target = ("/public/" + "/".join(segs)).encode()
    async with raw_upstream() as up, run_gateway(_public_cfg(up.url)) as gw:
        out, _ = await exchange(gw.port, _req(target))
        resps = parse_responses(out)
        assert resps and resps[0].complete
        status = resps[0].status
        assert status in (200, 400, 404), out
        if status == 200:
            (m,) = up.messages
            path = m.target.split(b"?")[0]
            assert path == b"/public" or path.startswith(b"/public/"), path
            assert normalize_path(path, allow_encoded_slashes=True) == path.decode()
        else:
            assert up.messages == []
