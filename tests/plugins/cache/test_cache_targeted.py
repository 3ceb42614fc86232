"""CDN-Cache-Control and Portway-Cache-Control (RFC 9213): parsing, and behaviour through a
real gateway (cases modelled on the cache-tests suite's ``cdn-cache-control`` group)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.plugins.cache.directives import format_http_date
from portway.plugins.cache.targeted import parse_dictionary, targeted_directives
from tests.helpers import http_get, run_gateway, run_upstream


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("max-age=60", {"max-age": 60}),
        ("no-store", {"no-store": True}),
        ('private="set-cookie, x-a", max-age=5', {"private": "set-cookie, x-a", "max-age": 5}),
        ("foobar, max-age=3600", {"foobar": True, "max-age": 3600}),
        ("max-age=60;x=1, a=(b c);d", {"max-age": 60, "a": ["b", "c"]}),
        ("a=?0, b=1.5, c=:aGk=:, d=tok/en", {"a": False, "b": 1.5, "c": b"hi", "d": "tok/en"}),
        ("max-age =100", None),
        ("max-age= 100", None),
        ("max-age=10000, &&&&&", None),
        ("MaX-aGe=3600", None),
        ("max-age=60,", None),
        ("a=1234567890123456", None),
        ('a="unterminated', None),
    ],
)
def test_structured_dictionary(text: str, parsed: dict[str, Any] | None) -> None:
    assert parse_dictionary([text]) == parsed


def test_directive_types_are_checked() -> None:
    d = targeted_directives(['max-age=99999999999, no-cache="x-a", stale-if-error=30'])
    assert d is not None
    assert d.seconds("max-age") == 2147483648  # clamped like delta-seconds
    assert d.field_names("no-cache") == frozenset({"x-a"})
    assert d.seconds("stale-if-error") == 30
    for wrong in ('max-age="10000"', "max-age=-1", "max-age=1.5", "no-store=1", "private=?0"):
        assert targeted_directives([wrong]) is None, wrong
    assert targeted_directives([""]) is None  # empty: ignored


def _now(offset: float = 0) -> str:
    return format_http_date(time.time() + offset)


#: path → (response headers, expected x-cache of the second GET)
CASES: dict[str, tuple[list[tuple[str, str]], str]] = {
    "/cdn-max-age": ([("CDN-Cache-Control", "max-age=3600")], "HIT"),
    "/cdn-max-age-max-plus": ([("CDN-Cache-Control", "max-age=99999999999")], "HIT"),
    "/cdn-max-age-age": (
        [("Date", "NOW"), ("CDN-Cache-Control", "max-age=3600"), ("Age", "7200")],
        "MISS",
    ),
    "/space-before-equals": (
        [("Cache-Control", "max-age=0"), ("CDN-Cache-Control", "max-age =100")],
        "MISS",
    ),
    "/space-after-equals": (
        [("Cache-Control", "max-age=0"), ("CDN-Cache-Control", "max-age= 100")],
        "MISS",
    ),
    "/cdn-max-age-0": (
        [("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=0")],
        "MISS",
    ),
    "/extension": ([("CDN-Cache-Control", "foobar, max-age=3600")], "HIT"),
    "/past-expires": (
        [("CDN-Cache-Control", "max-age=3600"), ("Expires", "PAST"), ("Date", "NOW")],
        "HIT",
    ),
    "/max-age-0-future-expires": (
        [("CDN-Cache-Control", "max-age=0"), ("Expires", "FUTURE"), ("Date", "NOW")],
        "MISS",
    ),
    "/long-cdn-short-cc": (
        [("Cache-Control", "max-age=0"), ("CDN-Cache-Control", "max-age=3600")],
        "HIT",
    ),
    "/cdn-private": (
        [("CDN-Cache-Control", "private"), ("Cache-Control", "max-age=10000")],
        "MISS",
    ),
    "/cdn-no-cache": (
        [("CDN-Cache-Control", "no-cache"), ("Cache-Control", "max-age=10000")],
        "MISS",
    ),
    "/cdn-no-store": (
        [("Cache-Control", "max-age=10000"), ("CDN-Cache-Control", "no-store")],
        "MISS",
    ),
    "/cdn-fresh-cc-no-store": (
        [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=10000")],
        "HIT",
    ),
    "/invalid-unknown-type": (
        [("CDN-Cache-Control", "max-age=10000, &&&&&"), ("Cache-Control", "no-store")],
        "MISS",
    ),
    "/invalid-wrong-type": (
        [("CDN-Cache-Control", 'max-age="10000"'), ("Cache-Control", "no-store")],
        "MISS",
    ),
    "/cdn-s-maxage": (
        [("Cache-Control", "max-age=0"), ("CDN-Cache-Control", "s-maxage=3600")],
        "HIT",
    ),
    "/own-field-wins": (
        [
            ("Cache-Control", "no-store"),
            ("CDN-Cache-Control", "no-store"),
            ("Portway-Cache-Control", "max-age=3600"),
        ],
        "HIT",
    ),
    "/stale-while-revalidate": (
        [
            ("Cache-Control", "no-store"),
            ("CDN-Cache-Control", "max-age=1, stale-while-revalidate=60"),
            ("Age", "5"),
        ],
        "STALE",
    ),
}


def _headers(spec: list[tuple[str, str]]) -> Headers:
    subst = {"NOW": _now(), "PAST": _now(-10000), "FUTURE": _now(10000)}
    return Headers.from_pairs([(k, subst.get(v, v)) for k, v in spec])


def _config(url: str, **cache: Any) -> dict[str, Any]:
    return {
        "upstreams": {"u": {"targets": [{"url": url}]}},
        "routes": [
            {
                "name": "c",
                "match": {"paths": ["/"]},
                "upstream": "u",
                "plugins": [{"name": "cache", "config": cache}],
            }
        ],
    }


async def test_targeted_fields_through_the_gateway() -> None:
    async def handler(req: Request) -> Response:
        return Response(200, _headers(CASES[req.path][0]), b"body")

    got: dict[str, str | None] = {}
    async with run_upstream(handler) as up, run_gateway(_config(up.url)) as gw:
        for path in CASES:
            s1, h1, _ = await http_get(gw.url + path)
            assert (s1, h1.get("x-cache")) == (200, "MISS"), path
            s2, h2, b2 = await http_get(gw.url + path)
            assert (s2, b2) == (200, b"body"), path
            got[path] = h2.get("x-cache")
    assert got == {path: expected for path, (_, expected) in CASES.items()}


async def test_cdn_field_is_forwarded_and_ours_is_stripped() -> None:
    async def handler(req: Request) -> Response:
        return Response(
            200,
            Headers.from_pairs(
                [
                    ("Cache-Control", "max-age=60"),
                    ("CDN-Cache-Control", "foo"),
                    ("Portway-Cache-Control", "max-age=600"),
                ]
            ),
            b"body",
        )

    async with run_upstream(handler) as up, run_gateway(_config(up.url)) as gw:
        for expected in ("MISS", "HIT"):
            _, h, _ = await http_get(gw.url + "/f")
            assert h.get("x-cache") == expected
            assert h.get("cdn-cache-control") == "foo"  # RFC 9213 §3: passed on
            assert h.get("portway-cache-control") is None  # addresses this cache alone
            assert h.get("cache-control") == "max-age=60"


async def test_target_list_is_configurable() -> None:
    async def handler(req: Request) -> Response:
        return Response(
            200,
            Headers.from_pairs(
                [
                    ("Cache-Control", "no-store"),
                    ("CDN-Cache-Control", "max-age=3600"),
                    ("Edge-Cache-Control", "max-age=3600"),
                ]
            ),
            b"body",
        )

    async with run_upstream(handler) as up:
        async with run_gateway(_config(up.url, targeted_cache_control=[])) as gw:
            await http_get(gw.url + "/n")
            assert (await http_get(gw.url + "/n"))[1].get("x-cache") == "MISS"
        cfg = _config(
            up.url,
            targeted_cache_control=["Edge-Cache-Control"],
            strip_targeted_cache_control=["Edge-Cache-Control"],
        )
        async with run_gateway(cfg) as gw:
            await http_get(gw.url + "/e")
            _, h, _ = await http_get(gw.url + "/e")
            assert h.get("x-cache") == "HIT" and h.get("edge-cache-control") is None
            assert h.get("cdn-cache-control") == "max-age=3600"


def test_bad_field_names_are_rejected_at_load() -> None:
    from pydantic import ValidationError

    from portway.plugins.cache.config import CacheConfig

    with pytest.raises(ValidationError, match="not a header field name"):
        CacheConfig.model_validate({"targeted_cache_control": ["CDN Cache Control"]})
