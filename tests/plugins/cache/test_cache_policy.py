from __future__ import annotations

import pytest

from portway.plugins.cache.directives import format_http_date, parse_cache_control
from portway.plugins.cache.entry import CacheEntry
from portway.plugins.cache.policy import (
    Reuse,
    Windows,
    assess,
    current_age,
    freshness_lifetime,
    merge_304,
    not_modified,
    request_directives,
    retention,
    reuse,
    stale_if_error_ok,
    storable,
    stored_headers,
    validators,
    vary_names,
)

NOW = 1_700_000_000.0


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in pairs]


def date(offset: float = 0) -> str:
    return format_http_date(NOW + offset)


def entry(
    *pairs: tuple[str, str], status: int = 200, t: float = NOW, rt: float | None = None
) -> CacheEntry:
    return CacheEntry(status, h(*pairs), b"body", rt if rt is not None else t, t, 0.0)


# --- storability -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "ok"),
    [
        (200, [], True),  # heuristically cacheable status
        (404, [], True),
        (302, [], False),  # not cacheable by default
        (302, [("Cache-Control", "max-age=60")], True),
        (500, [("Expires", date(60))], True),
        (503, [("Cache-Control", "public")], True),
        (206, [("Cache-Control", "max-age=60")], False),
        (304, [("Cache-Control", "max-age=60")], False),
        (100, [], False),
        (200, [("Cache-Control", "no-store")], False),
        (200, [("Cache-Control", "private")], False),
        (200, [("Cache-Control", 'private="x-user", max-age=60')], True),
        (200, [("Vary", "*")], False),
        (200, [("Vary", "accept, *")], False),
        (200, [("Set-Cookie", "a=b"), ("Cache-Control", "max-age=60")], False),
        (200, [("Cache-Control", "no-store, must-understand")], True),
        (299, [("Cache-Control", "max-age=60, must-understand")], False),
    ],
)
def test_storable_response_rules(status: int, headers: list[tuple[str, str]], ok: bool) -> None:
    assert storable("GET", status, h(*headers), [])[0] is ok


def test_only_get_is_stored_and_request_no_store_prevents_it() -> None:
    assert storable("HEAD", 200, [], [])[0] is False
    assert storable("POST", 200, h(("Cache-Control", "max-age=60")), [])[0] is False
    assert storable("GET", 200, [], h(("Cache-Control", "no-store")))[0] is False


def test_set_cookie_storable_when_configured() -> None:
    assert storable("GET", 200, h(("Set-Cookie", "a=b")), [], store_set_cookie=True)[0]


@pytest.mark.parametrize(
    ("cc", "ok"),
    [("max-age=60", False), ("public", True), ("s-maxage=60", True), ("must-revalidate", True)],
)
def test_authorization_rule_for_shared_caches(cc: str, ok: bool) -> None:
    req = h(("Authorization", "Bearer x"))
    assert storable("GET", 200, h(("Cache-Control", cc)), req)[0] is ok


def test_stored_headers_drop_hop_by_hop_connection_listed_and_no_cache_fields() -> None:
    resp = h(
        ("Connection", "a, b"),
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("Keep-Alive", "timeout=5"),
        ("Cache-Control", 'no-cache="d", max-age=60'),
        ("d", "4"),
        ("X-Cache", "MISS"),
    )
    out = dict(stored_headers(resp, response_time=NOW))
    assert out[b"c"] == b"3"
    for gone in (b"connection", b"a", b"b", b"keep-alive", b"d", b"x-cache"):
        assert gone not in out
    assert out[b"date"] == date().encode()  # added when the upstream sent none


# --- freshness ---------------------------------------------------------------------------


def test_s_maxage_beats_max_age_beats_expires() -> None:
    pairs = h(("Cache-Control", "max-age=10, s-maxage=20"), ("Expires", date(30)), ("Date", date()))
    assert freshness_lifetime(200, pairs, NOW) == 20
    pairs = h(("Cache-Control", "max-age=10"), ("Expires", date(30)), ("Date", date()))
    assert freshness_lifetime(200, pairs, NOW) == 10
    assert freshness_lifetime(200, h(("Expires", date(30)), ("Date", date())), NOW) == 30


def test_invalid_expires_means_already_expired() -> None:
    assert freshness_lifetime(200, h(("Expires", "0"), ("Date", date())), NOW) == 0
    assert freshness_lifetime(200, h(("Expires", date(-10)), ("Date", date())), NOW) == 0


def test_expires_without_date_uses_response_time() -> None:
    assert freshness_lifetime(200, h(("Expires", date(50))), NOW) == 50


def test_malformed_max_age_is_stale_not_heuristic() -> None:
    pairs = h(("Cache-Control", "max-age=abc"), ("Last-Modified", date(-100000)), ("Date", date()))
    assert freshness_lifetime(200, pairs, NOW) == 0


def test_heuristic_freshness_is_ten_percent_of_last_modified_age_capped() -> None:
    pairs = h(("Last-Modified", date(-100000)), ("Date", date()))
    assert freshness_lifetime(200, pairs, NOW) == pytest.approx(10000)
    assert freshness_lifetime(200, pairs, NOW, Windows(heuristic_max=600)) == 600
    assert freshness_lifetime(200, pairs, NOW, Windows(heuristic=False)) == 0
    assert freshness_lifetime(302, pairs, NOW) == 0  # not heuristically cacheable
    pub = h(("Last-Modified", date(-1000)), ("Date", date()), ("Cache-Control", "public"))
    assert freshness_lifetime(302, pub, NOW) == pytest.approx(100)


def test_default_ttl_applies_only_without_explicit_freshness() -> None:
    w = Windows(default_ttl=42)
    assert freshness_lifetime(200, [], NOW, w) == 42
    assert freshness_lifetime(200, h(("Cache-Control", "max-age=5")), NOW, w) == 5
    assert freshness_lifetime(500, [], NOW, w) == 0


# --- age ---------------------------------------------------------------------------------


def test_age_combines_apparent_age_upstream_age_delay_and_residence() -> None:
    # Date 100 s before the response arrived, Age 30, 2 s response delay, 5 s resident
    e = entry(("Date", date(-100)), ("Age", "30"), t=NOW, rt=NOW - 2)
    assert current_age(e, NOW + 5) == pytest.approx(max(100, 30 + 2) + 5)
    e = entry(("Date", date()), ("Age", "30"), t=NOW, rt=NOW - 2)
    assert current_age(e, NOW + 5) == pytest.approx(32 + 5)


def test_date_in_the_future_does_not_make_age_negative() -> None:
    e = entry(("Date", date(3600)), t=NOW)
    assert current_age(e, NOW) == 0


# --- reuse decisions ---------------------------------------------------------------------


def rq(v: str) -> object:
    return parse_cache_control([v])


def test_fresh_and_stale() -> None:
    e = entry(("Cache-Control", "max-age=100"), ("Date", date()))
    assert reuse(assess(e, NOW + 50), request_directives([])) is Reuse.FRESH
    assert reuse(assess(e, NOW + 150), request_directives([])) is Reuse.VALIDATE


def test_response_no_cache_always_validates() -> None:
    e = entry(("Cache-Control", "max-age=100, no-cache"), ("Date", date()))
    assert reuse(assess(e, NOW), request_directives([])) is Reuse.VALIDATE


def test_request_directives() -> None:
    e = entry(("Cache-Control", "max-age=100"), ("Date", date()))
    a = assess(e, NOW + 50)
    assert reuse(a, parse_cache_control(["no-cache"])) is Reuse.VALIDATE
    assert reuse(a, request_directives(h(("Pragma", "no-cache")))) is Reuse.VALIDATE
    assert (
        reuse(a, request_directives(h(("Pragma", "no-cache"), ("Cache-Control", "max-age=60"))))
        is Reuse.FRESH
    )
    assert reuse(a, parse_cache_control(["max-age=10"])) is Reuse.VALIDATE
    assert reuse(a, parse_cache_control(["max-age=60"])) is Reuse.FRESH
    assert reuse(a, parse_cache_control(["min-fresh=60"])) is Reuse.VALIDATE
    assert reuse(a, parse_cache_control(["min-fresh=40"])) is Reuse.FRESH
    stale = assess(e, NOW + 130)
    assert reuse(stale, parse_cache_control(["max-stale"])) is Reuse.STALE_OK
    assert reuse(stale, parse_cache_control(["max-stale=60"])) is Reuse.STALE_OK
    assert reuse(stale, parse_cache_control(["max-stale=10"])) is Reuse.VALIDATE


def test_must_revalidate_forbids_any_stale_use() -> None:
    e = entry(
        ("Cache-Control", "max-age=10, must-revalidate, stale-while-revalidate=100"),
        ("Date", date()),
    )
    a = assess(e, NOW + 20)
    assert reuse(a, parse_cache_control(["max-stale"])) is Reuse.VALIDATE
    assert not stale_if_error_ok(a, parse_cache_control([]))


def test_stale_while_revalidate_window_from_directive_or_config() -> None:
    e = entry(("Cache-Control", "max-age=10, stale-while-revalidate=30"), ("Date", date()))
    assert reuse(assess(e, NOW + 30), parse_cache_control([])) is Reuse.STALE_REFRESH
    assert reuse(assess(e, NOW + 45), parse_cache_control([])) is Reuse.VALIDATE
    plain = entry(("Cache-Control", "max-age=10"), ("Date", date()))
    assert reuse(assess(plain, NOW + 20), parse_cache_control([])) is Reuse.VALIDATE
    a = assess(plain, NOW + 20, Windows(swr=60.0))
    assert reuse(a, parse_cache_control([])) is Reuse.STALE_REFRESH
    assert reuse(assess(e, NOW + 30, Windows(swr=False)), parse_cache_control([])) is Reuse.VALIDATE


def test_stale_if_error_windows() -> None:
    e = entry(("Cache-Control", "max-age=10, stale-if-error=60"), ("Date", date()))
    none = parse_cache_control([])
    assert stale_if_error_ok(assess(e, NOW + 50), none)
    assert not stale_if_error_ok(assess(e, NOW + 100), none)
    plain = entry(("Cache-Control", "max-age=10"), ("Date", date()))
    assert not stale_if_error_ok(assess(plain, NOW + 50), none)
    assert stale_if_error_ok(assess(plain, NOW + 50), parse_cache_control(["stale-if-error=100"]))
    assert stale_if_error_ok(assess(plain, NOW + 50, Windows(sie=120.0)), none)


def test_retention_covers_freshness_plus_stale_windows() -> None:
    e = entry(("Cache-Control", "max-age=10, stale-while-revalidate=30"), ("Date", date()))
    assert retention(assess(e, NOW), False, 600) == pytest.approx(40)
    v = entry(("Cache-Control", "max-age=10"), ("Date", date()), ("ETag", '"x"'))
    assert retention(assess(v, NOW), True, 600) == pytest.approx(610)


# --- validation ----------------------------------------------------------------------------


def test_validators_from_etag_and_last_modified() -> None:
    e = entry(("ETag", '"v1"'), ("Last-Modified", date(-10)))
    assert validators(e) == [("if-none-match", '"v1"'), ("if-modified-since", date(-10))]
    assert validators(entry(("ETag", "bogus"), ("Last-Modified", "yesterday"))) == []


def test_merge_304_replaces_fields_but_not_content_length() -> None:
    stored = h(
        ("Content-Length", "4"), ("Test-Header", "A"), ("Cache-Control", "max-age=1"), ("X", "keep")
    )
    fresh = h(
        ("Content-Length", "0"),
        ("Test-Header", "B"),
        ("Cache-Control", "max-age=3600"),
        ("Set-Cookie", "a=c"),
    )
    out = merge_304(stored, fresh)
    d = dict(out)
    assert d[b"test-header"] == b"B"
    assert d[b"cache-control"] == b"max-age=3600"
    assert d[b"content-length"] == b"4"
    assert d[b"x"] == b"keep"
    assert b"set-cookie" not in d
    assert dict(merge_304(stored, fresh, store_set_cookie=True))[b"set-cookie"] == b"a=c"


def test_client_conditionals() -> None:
    e = entry(("ETag", 'W/"v1"'), ("Last-Modified", date(-100)), ("Date", date()))
    assert not_modified(h(("If-None-Match", '"v0", "v1"')), e)
    assert not_modified(h(("If-None-Match", "*")), e)
    assert not not_modified(h(("If-None-Match", '"v2"')), e)
    # If-None-Match takes precedence over If-Modified-Since
    assert not not_modified(h(("If-None-Match", '"v2"'), ("If-Modified-Since", date())), e)
    assert not_modified(h(("If-Modified-Since", date(-50))), e)
    assert not not_modified(h(("If-Modified-Since", date(-200))), e)
    assert not not_modified(h(("If-Modified-Since", "garbage")), e)
    assert not not_modified(h(("If-None-Match", "*")), entry(status=404))


def test_vary_names() -> None:
    assert vary_names(h(("Vary", "Accept-Encoding, accept"), ("Vary", "X-Foo"))) == (
        "accept",
        "accept-encoding",
        "x-foo",
    )
    assert vary_names(h(("Vary", "*"))) is None
    assert vary_names([]) == ()
