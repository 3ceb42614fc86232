"""The compiled router against a linear-scan reference of the documented rules.

The reference shares no code with the router: each path form becomes a Starlette-style regex
(or a string test), each candidate gets the documented sort key, and the smallest key wins.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portway.config.schema import RouteConfig
from portway.http.headers import Headers
from portway.routing.router import Router

SEGMENTS = ["a", "b", "ab", "1", "a.b"]
HOSTS = ["a.com", "x.a.com", "y.x.a.com", "b.com", "a.b.com"]
HOST_PATTERNS = ["a.com", "x.a.com", "*.a.com", "*.x.a.com", "b.com", "*.b.com", "*.com"]
METHODS = ["GET", "POST", "PUT"]


def _param(draw: st.DrawFn, names: list[str]) -> str:
    name = f"p{len(names)}"
    names.append(name)
    return "{" + name + "}"


@st.composite
def path_forms(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["prefix", "exact", "template", "catchall", "regex"]))
    n = draw(st.integers(0 if kind in ("prefix", "catchall") else 1, 3))
    if kind == "regex":
        lit = "/".join(draw(st.sampled_from(SEGMENTS)) for _ in range(n))
        tail = draw(st.sampled_from(["", "$", "(?P<tail>/[a-z]+)?", "/(?P<seg>[^/]+)"]))
        return "~^/" + re.escape(lit) + tail
    names: list[str] = []
    segs = []
    for _ in range(n):
        if kind in ("template", "catchall") and draw(st.booleans()):
            segs.append(_param(draw, names))
        else:
            segs.append(draw(st.sampled_from([*SEGMENTS, ""] if kind != "prefix" else SEGMENTS)))
    if kind == "catchall":
        segs.append("{rest:path}")
    path = "/" + "/".join(segs)
    if kind == "prefix" and draw(st.booleans()):
        path += "/"
    return "=" + path if kind == "exact" else path


@st.composite
def routes(draw: st.DrawFn) -> list[RouteConfig]:
    out = []
    for i in range(draw(st.integers(1, 12))):
        match: dict[str, Any] = {"paths": draw(st.lists(path_forms(), min_size=1, max_size=3))}
        if draw(st.integers(0, 2)) == 0:
            match["hosts"] = draw(st.lists(st.sampled_from(HOST_PATTERNS), min_size=1, max_size=2))
        if draw(st.integers(0, 2)) == 0:
            match["methods"] = draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=2))
        if draw(st.integers(0, 3)) == 0:
            match["headers"] = {"x-v": draw(st.sampled_from(["1", "2", "~[12]", "~1|3"]))}
            if draw(st.booleans()):
                match["headers"]["x-w"] = draw(st.sampled_from(["1", "~.*"]))
        out.append(RouteConfig(name=f"r{i}", match=match))
    return out


@st.composite
def request_paths(draw: st.DrawFn) -> str:
    segs = draw(st.lists(st.sampled_from([*SEGMENTS, "c", "xyz"]), max_size=4))
    path = "/" + "/".join(segs)
    if segs and draw(st.integers(0, 3)) == 0:
        path += "/"
    return path


# --- the reference -----------------------------------------------------------------------


def ref_path(form: str, path: str) -> tuple[dict[str, str], str] | None:
    """(params, prefix) when ``form`` matches ``path``."""
    if form.startswith("~"):
        m = re.match(form[1:], path)
        if m is None:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}, ""
    if form.startswith("="):
        return ({}, "") if path == form[1:] else None
    if "{" in form:
        rx = "".join(
            f"(?P<{m.group(1)}>.*)"
            if m.group(2)
            else f"(?P<{m.group(1)}>[^/]+)"
            if m.group(1)
            else re.escape(m.group(0))
            for m in re.finditer(r"\{(\w+)(:path)?\}|[^{]+", form)
        )
        m = re.fullmatch(rx, path)
        return None if m is None else (m.groupdict(), "")
    base = form.rstrip("/")
    if base == "" or path == base or path.startswith(base + "/"):
        return {}, base
    return None


def ref_path_key(form: str, r: RouteConfig) -> tuple[int, ...]:
    specific = (-len(r.match.headers), 0 if r.match.methods else 1)
    if form.startswith("="):
        return (0, *specific)
    if form.startswith("~"):
        return (2,)
    if "{" in form:
        literal = len(re.sub(r"\{[^}]*\}", "", form))
        return (1, -literal, 2 if ":path}" in form else 1, *specific)
    return (1, -len(form.rstrip("/")), 3, *specific)


def ref_host_tier(hosts: list[str], host: str) -> tuple[int, int] | None:
    if not hosts:
        return (2, 0)
    tiers = []
    for h in hosts:
        if h == host:
            tiers.append((0, 0))
        elif h.startswith("*.") and host.endswith(h[1:]) and len(host) > len(h) - 1:
            tiers.append((1, -len(h)))
    return min(tiers) if tiers else None


def ref_headers(spec: dict[str, str], headers: Headers) -> bool:
    for name, want in spec.items():
        values = headers.get_all(name)
        if want.startswith("~"):
            if not any(re.fullmatch(want[1:], v) for v in values):
                return False
        elif want not in values:
            return False
    return True


def ref_candidates(
    rs: list[RouteConfig], host: str, path: str, headers: Headers
) -> list[tuple[tuple[Any, ...], int, str, dict[str, str], str, RouteConfig]]:
    out = []
    for i, r in enumerate(rs):
        tier = ref_host_tier(r.match.hosts, host)
        if tier is None or not ref_headers(r.match.headers, headers):
            continue
        for j, form in enumerate(r.match.paths):
            res = ref_path(form, path)
            if res is not None:
                key = (tier, ref_path_key(form, r), i, j)
                out.append((key, i, form, res[0], res[1], r))
    return out


def ref_match(
    rs: list[RouteConfig], host: str, method: str, path: str, headers: Headers
) -> tuple[int, str, dict[str, str], str] | None:
    cands = [
        c
        for c in ref_candidates(rs, host, path, headers)
        if not c[5].match.methods or method in c[5].match.methods
    ]
    if not cands:
        return None
    _, i, form, params, prefix, _ = min(cands, key=lambda c: c[0])
    return i, form, params, prefix


# --- properties --------------------------------------------------------------------------


requests = st.tuples(
    st.sampled_from(HOSTS),
    st.sampled_from(METHODS),
    request_paths(),
    st.sampled_from(
        [[], [("x-v", "1")], [("x-v", "2"), ("x-w", "1")], [("x-v", "3"), ("x-v", "1")]]
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routes(), st.lists(requests, min_size=1, max_size=8))
def test_router_agrees_with_linear_scan(
    rs: list[RouteConfig], reqs: list[tuple[str, str, str, list[tuple[str, str]]]]
) -> None:
    router = Router(rs)
    for host, method, path, pairs in reqs:
        headers = Headers.from_pairs(pairs)
        got = router.match(host, method, path, headers)
        want = ref_match(rs, host, method, path, headers)
        if want is None:
            assert got is None, (host, method, path, got)
            allowed = {
                m for c in ref_candidates(rs, host, path, headers) for m in c[5].match.methods
            }
            assert router.allowed_methods(host, path, headers) == allowed
        else:
            assert got is not None, (host, method, path, want)
            assert (got.index, got.pattern, got.params, got.prefix) == want, (host, method, path)
            assert got.route is rs[got.index]


@settings(max_examples=200, deadline=None)
@given(routes())
def test_table_lists_every_form_once_with_ranks(rs: list[RouteConfig]) -> None:
    table = Router(rs).table()
    assert [rank for rank, _, _ in table] == list(range(1, len(table) + 1))
    assert sorted((r.name, f) for _, f, r in table) == sorted(
        (r.name, f) for r in rs for f in r.match.paths
    )
    hostless = [(f, r) for _, f, r in table if not r.match.hosts]
    keys = [(ref_path_key(f, r), rs.index(r)) for f, r in hostless]
    assert keys == sorted(keys)
