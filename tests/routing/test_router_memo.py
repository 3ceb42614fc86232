"""The router's memo of recent (host, method, path) answers must never change an answer."""

from __future__ import annotations

from typing import Any

import pytest

from portway.config.schema import MatchConfig, RouteConfig
from portway.http.headers import Headers
from portway.routing import router as router_mod
from portway.routing.router import Router


def route(name: str, *paths: str, **match: Any) -> RouteConfig:
    return RouteConfig(name=name, match=MatchConfig(paths=list(paths), **match))


def name(r: Router, path: str, method: str = "GET", host: str = "", **h: str) -> str | None:
    headers = Headers.from_pairs(list(h.items()))
    m = r.match(host, method, path, headers)
    return None if m is None else m.route.name


def test_repeated_matches_agree_and_shared_params_are_read_only() -> None:
    r = Router([route("items", "/items"), route("one", "/items/{id}"), route("all", "/")])
    for _ in range(3):
        assert name(r, "/items") == "items"
        assert name(r, "/items/7") == "one"
        assert name(r, "/other") == "all"
    a = r.match("", "GET", "/items", Headers())
    b = r.match("", "GET", "/items", Headers())
    assert a is not None and b is not None
    # a memoised match is one object for every request that hits it: nothing may change it
    assert a is b and a.params == {} and isinstance(a.params, dict)
    for mutate in (
        lambda p: p.__setitem__("id", "1"),
        lambda p: p.update(id="1"),
        lambda p: p.setdefault("id", "1"),
        lambda p: p.pop("id", None),
        lambda p: p.clear(),
    ):
        with pytest.raises(TypeError):
            mutate(a.params)
    assert b.params == {}
    # matches that capture params are built per request
    c = r.match("", "GET", "/items/7", Headers())
    d = r.match("", "GET", "/items/7", Headers())
    assert c is not None and d is not None
    assert c.params == {"id": "7"} and c is not d and c.params is not d.params
    c.params["id"] = "8"
    assert d.params == {"id": "7"}


def test_method_and_host_are_part_of_the_answer() -> None:
    r = Router(
        [
            route("post", "/x", methods=["POST"]),
            route("site", "/x", hosts=["a.example"]),
            route("any", "/"),
        ]
    )
    for _ in range(2):
        assert name(r, "/x", "POST") == "post"
        assert name(r, "/x", "GET") == "any"
        assert name(r, "/x", "GET", host="a.example") == "site"


def test_no_memo_when_a_route_has_header_conditions() -> None:
    r = Router([route("v2", "/api", headers={"x-version": "2"}), route("v1", "/api")])
    for _ in range(2):
        assert name(r, "/api", **{"x-version": "2"}) == "v2"
        assert name(r, "/api") == "v1"


def test_memo_stays_bounded() -> None:
    r = Router([route("all", "/")])
    for i in range(router_mod._MEMO_SIZE * 2 + 3):
        assert name(r, f"/p/{i}") == "all"
    memo = r._memo
    assert memo is not None and len(memo) <= router_mod._MEMO_SIZE
