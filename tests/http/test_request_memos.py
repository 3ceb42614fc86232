"""The request side's one-entry memos give what they remember, never a stale answer.

Session 12 (s12-head) remembers the last Host value and origin-form path with what
``_parse_host`` / ``normalize_path`` made of them (``serverparse._Last``), the router's last
match by identity of its key (``Router._last``), ``"%" in path`` for the last path object
(``path.has_percent``), the last Host line written upstream (``forwarding._HostLine``) and a
filter of a hook's drop set (``forwarding._DropFilter``). Each is checked here against the
un-remembered computation over sequences that repeat, alternate and change values (a stale
entry would show as the previous request's answer).
"""

from __future__ import annotations

import random

import pytest

from portway.config.schema import RouteConfig
from portway.errors import GatewayError
from portway.http.forwarding import _DROPS, _HOST_LINE, _dropped
from portway.http.headers import Headers
from portway.http.path import has_percent, normalize_path
from portway.http.serverparse import _parse_host
from portway.routing.router import Router
from tests.http.test_lite_request import _serve

HOSTS = [b"api.example.com", b"a", b"A:81", b"api.example.com", b"b.test", b"[::1]:8", b"a"]
TARGETS = [
    b"/api/items?id=7",
    b"/api/items",
    b"/api/items?id=8",
    b"/api/itemsx?id=7",
    b"/api/item?s=7",
    b"/x/%41/../b",
    b"/api/items",
    b"/",
    b"/a//b?q",
]


def _expected(target: bytes, host: bytes) -> tuple[str, bytes, str] | None:
    """What the request must carry, from the functions themselves (no memo)."""
    raw_path, _, query = target.partition(b"?")
    try:
        path = normalize_path(raw_path, allow_encoded_slashes=True)
    except GatewayError:
        return None
    return path, query, _parse_host(host)


@pytest.mark.parametrize("seed", range(6))
def test_host_and_path_memos_give_each_request_its_own(seed: int) -> None:
    rnd = random.Random(seed)
    pairs = [(rnd.choice(TARGETS), rnd.choice(HOSTS)) for _ in range(40)]
    reads = [b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n\r\n" % p for p in pairs]
    for lite in (True, False):
        seen, _out, _closed = _serve(reads, lite, "task")
        want = [_expected(t, h) for t, h in pairs]
        got = [(s[1], s[2], s[5]) for s in seen]
        assert got == [w for w in want if w is not None]


def test_has_percent_follows_the_path_object() -> None:
    paths = ["/a", "/a%20b", "/a", "/b", "/%", "/%", ""]
    for _ in range(3):
        for p in paths:
            fresh = "".join(list(p))  # (an equal string, not the same object)
            assert has_percent(p) == ("%" in p)
            assert has_percent(fresh) == ("%" in p)


def test_host_line_follows_the_value() -> None:
    values = [b"u:9", b"u:9", b"", b"v", b"u:9", b"u:9", b"w.test:8080"]
    for v in values * 2:
        assert _HOST_LINE.line(v) == b"host: " + v + b"\r\n"


def test_drop_filter_never_hides_a_dropped_name() -> None:
    rnd = random.Random(7)
    alphabet = b"abcxyz-_019"
    names = [bytes(rnd.choices(alphabet, k=rnd.randint(1, 40))) for _ in range(300)]
    names += [b"apikey", b"accept", b"x-consumer-id", b"host", b"user-agent"]
    sets = [frozenset(rnd.sample(names, rnd.randint(0, 9))) for _ in range(30)]
    sets.append(frozenset({b"apikey", b"x-consumer-id", b"x-consumer-username"}))
    for drop in sets + sets[::-1]:
        few = _DROPS.of(drop)
        for k in names:
            assert _dropped(k, drop, few) == (k in drop), (k, drop)
        for k in drop:
            assert _dropped(k, drop, few)


def _route(name: str, path: str, hosts: list[str] | None = None) -> RouteConfig:
    return RouteConfig.model_validate(
        {"name": name, "match": {"paths": [path], "hosts": hosts or []}, "upstream": "u"}
    )


def test_router_last_match_is_the_key_match() -> None:
    routes = [
        _route("exact", "/api/items"),
        _route("hosted", "/api/items", ["b.test"]),
        _route("prefix", "/api/"),
        _route("other", "/other"),
    ]
    r = Router(routes)
    keys = [
        ("a", "GET", "/api/items"),
        ("b.test", "GET", "/api/items"),
        ("a", "GET", "/api/x"),
        ("a", "POST", "/api/items"),
        ("a", "GET", "/other"),
        ("a", "GET", "/nothing"),
        ("a", "GET", "nothing"),
    ]
    rnd = random.Random(3)
    for _ in range(200):
        host, method, path = rnd.choice(keys)
        if rnd.random() < 0.5:  # equal new strings, not the objects the memo holds
            host, method, path = "".join(list(host)), "".join(list(method)), "".join(list(path))
        got = r.match(host, method, path, Headers())
        want = Router(routes).match(host, method, path, Headers())
        if want is None:
            assert got is None
        else:
            assert got is not None
            assert (got.name, got.index, got.prefix, got.params) == (
                want.name,
                want.index,
                want.prefix,
                want.params,
            )
