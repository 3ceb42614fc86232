"""Router behaviour: every path form, priority rule, host/method/header narrowing, table."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from portway.config.schema import MatchConfig, RouteConfig
from portway.http.headers import Headers
from portway.routing.router import RouteMatch, Router

NO_HEADERS = Headers()


def route(name: str, *paths: str, **match: Any) -> RouteConfig:
    if paths:
        match["paths"] = list(paths)
    return RouteConfig(name=name, match=match)


def hit(
    router: Router,
    path: str,
    *,
    host: str = "example.com",
    method: str = "GET",
    headers: Headers = NO_HEADERS,
) -> RouteMatch | None:
    return router.match(host, method, path, headers)


def name_of(router: Router, path: str, **kw: Any) -> str | None:
    m = hit(router, path, **kw)
    return None if m is None else m.route.name


# --- path forms ------------------------------------------------------------------------------


class TestPrefix:
    router = Router([route("users", "/users")])

    @pytest.mark.parametrize("path", ["/users", "/users/", "/users/7", "/users/7/orders/1"])
    def test_matches_on_segment_boundary(self, path: str) -> None:
        m = hit(self.router, path)
        assert m is not None
        assert (m.route.name, m.prefix, m.pattern, m.params) == ("users", "/users", "/users", {})

    @pytest.mark.parametrize("path", ["/usersx", "/user", "/", "/Users", "/api/users"])
    def test_rejects_other_paths(self, path: str) -> None:
        assert hit(self.router, path) is None

    def test_root_matches_everything_with_empty_prefix(self) -> None:
        r = Router([route("all", "/")])
        for path in ("/", "/a", "/a/b/", "/%20"):
            m = hit(r, path)
            assert m is not None and m.prefix == "" and m.pattern == "/"

    def test_trailing_slash_in_form_is_ignored(self) -> None:
        r = Router([route("u", "/users/")])
        for path in ("/users", "/users/", "/users/7"):
            m = hit(r, path)
            assert m is not None and m.prefix == "/users" and m.pattern == "/users/"
        assert hit(r, "/usersx") is None

    def test_prefix_is_what_strip_prefix_removes(self) -> None:
        r = Router([route("api", "/api/v1")])
        m = hit(r, "/api/v1/users/7")
        assert m is not None
        assert "/api/v1/users/7"[len(m.prefix) :] == "/users/7"


class TestExact:
    router = Router([route("health", "=/health"), route("root", "=/")])

    def test_exact(self) -> None:
        m = hit(self.router, "/health")
        assert m is not None and m.route.name == "health" and m.prefix == "" and m.params == {}
        assert m.pattern == "=/health"
        assert name_of(self.router, "/") == "root"

    @pytest.mark.parametrize("path", ["/health/", "/health/x", "/healthz", "/x"])
    def test_nothing_else(self, path: str) -> None:
        assert hit(self.router, path) is None


class TestTemplate:
    router = Router(
        [
            route("user", "/users/{id}"),
            route("item", "/users/{id}/orders/{order}"),
            route("files", "/files/{rest:path}"),
        ]
    )

    def test_one_param(self) -> None:
        m = hit(self.router, "/users/7")
        assert m is not None and m.route.name == "user" and m.params == {"id": "7"}
        assert m.prefix == "" and m.pattern == "/users/{id}"

    def test_two_params(self) -> None:
        m = hit(self.router, "/users/7/orders/abc")
        assert m is not None and m.route.name == "item"
        assert m.params == {"id": "7", "order": "abc"}

    @pytest.mark.parametrize(
        "path", ["/users", "/users/", "/users/7/", "/users/7/orders", "/users/7/x/1", "/users/7/8"]
    )
    def test_exact_segment_count_and_non_empty_params(self, path: str) -> None:
        assert hit(self.router, path) is None

    def test_params_stay_percent_encoded(self) -> None:
        m = hit(self.router, "/users/a%20b")
        assert m is not None and m.params == {"id": "a%20b"}

    @pytest.mark.parametrize(
        ("path", "rest"),
        [
            ("/files/a", "a"),
            ("/files/a/b/c.txt", "a/b/c.txt"),
            ("/files/", ""),
            ("/files/a/", "a/"),
        ],
    )
    def test_catchall_captures_remainder(self, path: str, rest: str) -> None:
        m = hit(self.router, path)
        assert m is not None and m.route.name == "files" and m.params == {"rest": rest}

    def test_catchall_needs_the_slash(self) -> None:
        assert hit(self.router, "/files") is None
        assert hit(self.router, "/filesx/a") is None

    def test_root_catchall(self) -> None:
        r = Router([route("any", "/{rest:path}")])
        m = hit(r, "/")
        assert m is not None and m.params == {"rest": ""}
        m = hit(r, "/a/b")
        assert m is not None and m.params == {"rest": "a/b"}

    def test_param_then_catchall(self) -> None:
        r = Router([route("t", "/{tenant}/{rest:path}")])
        m = hit(r, "/acme/x/y")
        assert m is not None and m.params == {"tenant": "acme", "rest": "x/y"}
        assert hit(r, "/acme") is None

    def test_str_converter_is_a_plain_param(self) -> None:
        m = hit(Router([route("u", "/u/{id:str}")]), "/u/1")
        assert m is not None and m.params == {"id": "1"}

    def test_same_position_different_names(self) -> None:
        r = Router([route("a", "/x/{a}/one"), route("b", "/x/{b}/two")])
        m = hit(r, "/x/1/two")
        assert m is not None and m.route.name == "b" and m.params == {"b": "1"}


class TestRegex:
    def test_anchored_at_start_only(self) -> None:
        r = Router([route("v", "~/v[0-9]+/")])
        assert name_of(r, "/v2/users") == "v"
        assert hit(r, "/api/v2/users") is None
        assert hit(r, "/v2") is None

    def test_end_anchor_when_written(self) -> None:
        r = Router([route("v", "~^/v[0-9]+$")])
        assert name_of(r, "/v12") == "v"
        assert hit(r, "/v12/x") is None

    def test_named_groups_become_params(self) -> None:
        r = Router([route("v", r"~^/v(?P<ver>[0-9]+)/(?P<res>\w+)(?:/(?P<id>\d+))?")])
        m = hit(r, "/v3/users/9")
        assert m is not None and m.params == {"ver": "3", "res": "users", "id": "9"}
        assert m.prefix == "" and m.pattern.startswith("~")
        m = hit(r, "/v3/users")
        assert m is not None and m.params == {"ver": "3", "res": "users"}  # unset group omitted


class TestNormalisation:
    @pytest.mark.parametrize("form", ["/caf%c3%a9", "/café", "/caf%C3%A9"])
    def test_literals_normalised_like_request_paths(self, form: str) -> None:
        assert name_of(Router([route("c", form)]), "/caf%C3%A9/x") == "c"

    def test_unreserved_escapes_decoded(self) -> None:
        assert name_of(Router([route("t", "=/%7Euser")]), "/~user") == "t"


@pytest.mark.parametrize(
    ("form", "msg"),
    [
        ("/a{b}", "whole segment"),
        ("/a/{b", "whole segment"),
        ("/a/b}", "whole segment"),
        ("/{x:path}/y", "last segment"),
        ("/{x:int}", "unknown converter"),
        ("/{x}/{x}", "duplicate parameter"),
        ("/{1x}", "whole segment"),
        ("=/a/{x:path}", "cannot end in a catch-all"),
    ],
)
class TestInvalidForms:
    def test_rejected_by_the_schema(self, form: str, msg: str) -> None:
        with pytest.raises(ValidationError, match=msg):
            route("bad", form)

    def test_rejected_by_the_router_with_route_name(self, form: str, msg: str) -> None:
        unchecked = RouteConfig.model_construct(
            name="bad", match=MatchConfig.model_construct(paths=[form], hosts=[], headers={})
        )
        with pytest.raises(ValueError, match=msg) as ei:
            Router([unchecked])
        assert "'bad'" in str(ei.value)


# --- priority --------------------------------------------------------------------------------


class TestPriority:
    def test_exact_beats_everything(self) -> None:
        r = Router(
            [
                route("re", "~^/a"),
                route("tpl", "/{x}"),
                route("pre", "/a"),
                route("exact", "=/a"),
            ]
        )
        assert name_of(r, "/a") == "exact"

    def test_longer_prefix_wins_whatever_the_order(self) -> None:
        r = Router([route("short", "/api"), route("long", "/api/users"), route("root", "/")])
        assert name_of(r, "/api/users/1") == "long"
        assert name_of(r, "/api/orders") == "short"
        assert name_of(r, "/other") == "root"

    def test_template_with_more_literal_beats_prefix(self) -> None:
        r = Router([route("pre", "/users"), route("tpl", "/users/{id}")])
        assert name_of(r, "/users/7") == "tpl"  # 7 literal chars vs 6
        assert name_of(r, "/users/7/orders") == "pre"
        assert name_of(r, "/users") == "pre"

    def test_prefix_with_more_literal_beats_template(self) -> None:
        r = Router([route("tpl", "/users/{id}"), route("admin", "/users/admin")])
        assert name_of(r, "/users/admin") == "admin"
        assert name_of(r, "/users/bob") == "tpl"

    def test_tie_template_before_prefix(self) -> None:
        # "/{x}/c" and "/ab" both have 3 literal characters
        r = Router([route("pre", "/ab"), route("tpl", "/{x}/c")])
        assert name_of(r, "/ab/c") == "tpl"
        assert name_of(r, "/ab/c/d") == "pre"
        assert name_of(r, "/ab/d") == "pre"

    def test_tie_template_before_catchall_before_prefix(self) -> None:
        r = Router(
            [
                route("pre", "/x"),  # 2 literal characters
                route("catch", "/{a}/{rest:path}"),  # "//" : 2
                route("tpl", "/{a}/{b}"),  # "//" : 2
            ]
        )
        assert name_of(r, "/x/y") == "tpl"
        assert name_of(r, "/x/y/z") == "catch"
        assert name_of(r, "/x") == "pre"

    def test_full_tie_goes_to_declared_order(self) -> None:
        r = Router([route("first", "/a"), route("second", "/a")])
        assert name_of(r, "/a/b") == "first"
        r = Router([route("first", "/{x}"), route("second", "/{y}")])
        m = hit(r, "/a")
        assert m is not None and m.route.name == "first" and m.params == {"x": "a"}

    def test_tie_goes_to_more_conditions_before_declared_order(self) -> None:
        r = Router(
            [
                route("plain", "/a"),
                route("get", "/a", methods=["GET"]),
                route("hdr", "/a", headers={"x-v": "1"}),
                route("hdr2", "/a", headers={"x-v": "1", "x-w": "~.+"}),
                route("longer", "/a/b"),
            ]
        )
        assert name_of(r, "/a") == "get"
        assert name_of(r, "/a", method="POST") == "plain"
        v1 = Headers.from_pairs([("x-v", "1")])
        assert name_of(r, "/a", headers=v1) == "hdr"
        v1w = Headers.from_pairs([("x-v", "1"), ("x-w", "z")])
        assert name_of(r, "/a", headers=v1w) == "hdr2"
        assert name_of(r, "/a/b", headers=v1w) == "longer"  # path specificity comes first

    def test_regex_ignores_conditions_for_order(self) -> None:
        r = Router([route("first", "~^/a"), route("hdr", "~^/a", headers={"x-v": "1"})])
        assert name_of(r, "/a", headers=Headers.from_pairs([("x-v", "1")])) == "first"

    def test_best_form_within_a_route(self) -> None:
        r = Router([route("multi", "/a", "=/a/b", "/a/{x}")])
        m = hit(r, "/a/b")
        assert m is not None and m.pattern == "=/a/b"
        m = hit(r, "/a/c")
        assert m is not None and m.pattern == "/a/{x}" and m.params == {"x": "c"}
        m = hit(r, "/a/c/d")
        assert m is not None and m.pattern == "/a" and m.prefix == "/a"

    def test_regex_only_when_nothing_else_matches(self) -> None:
        r = Router([route("re", "~^/users/"), route("root", "/")])
        assert name_of(r, "/users/1") == "root"
        r = Router([route("re1", "~^/v1"), route("re2", "~^/v"), route("root", "=/")])
        assert name_of(r, "/v1/x") == "re1"
        assert name_of(r, "/v2/x") == "re2"

    def test_considered_counts_examined_candidates(self) -> None:
        r = Router([route("a", "/a", methods=["POST"]), route("b", "/a"), route("c", "/")])
        m = hit(r, "/a/x")
        assert m is not None and m.route.name == "b" and m.considered == 2
        assert m.index == 1


# --- hosts -----------------------------------------------------------------------------------


class TestHosts:
    def test_host_routes_before_hostless_even_with_shorter_path(self) -> None:
        r = Router([route("deep", "/api/users"), route("site", "/", hosts=["api.example.com"])])
        assert name_of(r, "/api/users", host="api.example.com") == "site"
        assert name_of(r, "/api/users", host="other.com") == "deep"

    def test_route_with_other_hosts_is_skipped(self) -> None:
        r = Router([route("a", "/", hosts=["a.com"])])
        assert hit(r, "/", host="b.com") is None
        assert name_of(r, "/", host="a.com") == "a"

    @pytest.mark.parametrize(
        ("host", "ok"),
        [
            ("a.example.com", True),
            ("a.b.example.com", True),
            ("example.com", False),
            ("aexample.com", False),
            ("example.com.evil", False),
        ],
    )
    def test_wildcard_matches_one_or_more_left_labels(self, host: str, ok: bool) -> None:
        r = Router([route("w", "/", hosts=["*.example.com"])])
        assert (hit(r, "/x", host=host) is not None) is ok

    def test_exact_beats_wildcard_beats_none(self) -> None:
        r = Router(
            [
                route("none", "/"),
                route("wild", "/", hosts=["*.example.com"]),
                route("wild2", "/", hosts=["*.api.example.com"]),
                route("exact", "/", hosts=["v1.api.example.com"]),
            ]
        )
        assert name_of(r, "/", host="v1.api.example.com") == "exact"
        assert name_of(r, "/", host="v2.api.example.com") == "wild2"
        assert name_of(r, "/", host="www.example.com") == "wild"
        assert name_of(r, "/", host="example.org") == "none"

    def test_falls_through_tiers_when_path_misses(self) -> None:
        r = Router([route("host", "/only", hosts=["a.com"]), route("any", "/")])
        assert name_of(r, "/only/x", host="a.com") == "host"
        assert name_of(r, "/other", host="a.com") == "any"

    def test_ports_in_patterns_and_trailing_dot(self) -> None:
        r = Router([route("p", "/", hosts=["a.com:8080", "*.b.com:443"])])
        assert name_of(r, "/", host="a.com") == "p"
        assert name_of(r, "/", host="x.b.com") == "p"
        assert name_of(r, "/", host="a.com.") == "p"

    def test_host_patterns_are_case_insensitive(self) -> None:
        r = Router([route("p", "/", hosts=["API.Example.COM"])])
        assert name_of(r, "/", host="api.example.com") == "p"

    def test_route_listed_under_several_hosts(self) -> None:
        r = Router([route("p", "/x", hosts=["a.com", "*.a.com", "b.com"]), route("any", "/")])
        for host in ("a.com", "w.a.com", "b.com"):
            assert name_of(r, "/x", host=host) == "p"
        assert name_of(r, "/x", host="c.com") == "any"


# --- methods ---------------------------------------------------------------------------------


class TestMethods:
    router = Router(
        [
            route("read", "/users/{id}", methods=["GET"]),
            route("write", "/users/{id}", methods=["put", "DELETE"]),
            route("create", "=/users", methods=["POST"]),
        ]
    )

    def test_methods_narrow(self) -> None:
        assert name_of(self.router, "/users/1", method="GET") == "read"
        assert name_of(self.router, "/users/1", method="PUT") == "write"
        assert name_of(self.router, "/users/1", method="DELETE") == "write"
        assert name_of(self.router, "/users", method="POST") == "create"

    def test_mismatch_reports_allowed_methods(self) -> None:
        assert hit(self.router, "/users/1", method="PATCH") is None
        allowed = self.router.allowed_methods("example.com", "/users/1", NO_HEADERS)
        assert allowed == {"GET", "PUT", "DELETE"}
        assert self.router.allowed_methods("example.com", "/users", NO_HEADERS) == {"POST"}

    def test_unknown_path_has_no_allowed_methods(self) -> None:
        assert self.router.allowed_methods("example.com", "/nope", NO_HEADERS) == frozenset()
        assert self.router.allowed_methods("example.com", "*", NO_HEADERS) == frozenset()

    def test_head_is_not_implied_and_methods_are_case_sensitive(self) -> None:
        assert hit(self.router, "/users/1", method="HEAD") is None
        assert hit(self.router, "/users/1", method="get") is None

    def test_falls_back_to_lower_priority_route(self) -> None:
        r = Router([route("get", "/users/{id}", methods=["GET"]), route("any", "/users")])
        assert name_of(r, "/users/1", method="POST") == "any"

    def test_allowed_methods_respect_hosts_and_headers(self) -> None:
        r = Router(
            [
                route("h", "/x", methods=["GET"], hosts=["a.com"]),
                route("v", "/x", methods=["PUT"], headers={"x-v": "2"}),
            ]
        )
        assert r.allowed_methods("a.com", "/x", NO_HEADERS) == {"GET"}
        assert r.allowed_methods("b.com", "/x", NO_HEADERS) == frozenset()
        v2 = Headers.from_pairs([("X-V", "2")])
        assert r.allowed_methods("a.com", "/x", v2) == {"GET", "PUT"}


# --- headers ---------------------------------------------------------------------------------


class TestHeaders:
    router = Router(
        [
            route("v2", "/api", headers={"X-Version": "2"}),
            route("vre", "/api", headers={"x-version": "~v[0-9]+"}),
            route("both", "/api", headers={"x-a": "1", "x-b": "~b.*"}),
            route("default", "/api"),
        ]
    )

    def check(self, pairs: list[tuple[str, str]]) -> str | None:
        return name_of(self.router, "/api/x", headers=Headers.from_pairs(pairs))

    def test_exact_value(self) -> None:
        assert self.check([("x-version", "2")]) == "v2"
        assert self.check([("X-VERSION", "2")]) == "v2"

    def test_regex_full_match(self) -> None:
        assert self.check([("x-version", "v12")]) == "vre"
        assert self.check([("x-version", "xv1")]) == "default"
        assert self.check([("x-version", "v1x")]) == "default"

    def test_mismatch_or_absent_falls_through(self) -> None:
        assert self.check([("x-version", "3")]) == "default"
        assert self.check([]) == "default"
        assert self.check([("x-version", " 2")]) == "default"

    def test_any_field_value_may_match(self) -> None:
        assert self.check([("x-version", "1"), ("x-version", "2")]) == "v2"

    def test_all_conditions_required(self) -> None:
        assert self.check([("x-a", "1"), ("x-b", "bee")]) == "both"
        assert self.check([("x-a", "1")]) == "default"
        assert self.check([("x-a", "2"), ("x-b", "bee")]) == "default"

    def test_empty_value_requires_presence(self) -> None:
        r = Router([route("e", "/", headers={"x-flag": ""})])
        assert name_of(r, "/", headers=Headers.from_pairs([("x-flag", "")])) == "e"
        assert hit(r, "/") is None


# --- contract details ------------------------------------------------------------------------


def test_route_match_is_comparable_and_replaceable() -> None:
    # not frozen: a frozen dataclass's __init__ is interpreted even under mypyc, and one
    # RouteMatch is built per request; it is documented as read-only
    r = Router([route("u", "/users/{id}")])
    m = hit(r, "/users/1")
    assert m is not None
    assert m.name == "u"
    assert m == RouteMatch(m.route, 0, {"id": "1"}, "", "/users/{id}", m.considered)
    assert dataclasses.replace(m, prefix="/p").prefix == "/p"


def test_no_match_can_change_another_requests_params() -> None:
    # a match that captured nothing is shared (memoised): its params refuse changes
    r = Router([route("a", "/a"), route("b", "/b/{id}")])
    m1, m2 = hit(r, "/a"), hit(r, "/a")
    assert m1 is not None and m2 is not None
    with pytest.raises(TypeError):
        m1.params["x"] = "1"
    assert m2.params == {}
    # one that captured params has its own
    m3, m4 = hit(r, "/b/1"), hit(r, "/b/1")
    assert m3 is not None and m4 is not None
    m3.params["x"] = "1"
    assert m4.params == {"id": "1"}


def test_non_origin_form_path_matches_nothing() -> None:
    r = Router([route("all", "/"), route("re", "~.*")])
    assert hit(r, "*") is None
    assert hit(r, "") is None


def test_empty_router() -> None:
    r = Router([])
    assert hit(r, "/") is None
    assert r.table() == []


def test_table_is_in_priority_order() -> None:
    routes = [
        route("re", "~^/v1"),
        route("root", "/"),
        route("users", "/users", "=/users/me"),
        route("user", "/users/{id}"),
        route("wild", "/", hosts=["*.a.com"]),
        route("host", "/x", hosts=["b.com", "*.b.com"]),
    ]
    table = Router(routes).table()
    assert [(rank, form, r.name) for rank, form, r in table] == [
        (1, "/x", "host"),
        (2, "/", "wild"),
        (3, "=/users/me", "users"),
        (4, "/users/{id}", "user"),
        (5, "/users", "users"),
        (6, "/", "root"),
        (7, "~^/v1", "re"),
    ]


def test_ten_thousand_routes() -> None:
    routes = []
    for i in range(2_500):
        routes += [
            route(f"p{i}", f"/svc{i}"),
            route(f"t{i}", f"/svc{i}/users/{{id}}", methods=["GET"]),
            route(f"e{i}", f"=/svc{i}/health"),
            route(f"h{i}", "/", hosts=[f"h{i}.example.com"]),
        ]
    r = Router(routes)
    assert len(r.table()) == 10_000
    assert name_of(r, "/svc1234/users/9") == "t1234"
    assert name_of(r, "/svc1234/users/9", method="POST") == "p1234"
    assert name_of(r, "/svc2499/health") == "e2499"
    assert name_of(r, "/svc7/x") == "p7"
    assert name_of(r, "/svc7/x", host="h99.example.com") == "h99"
    assert hit(r, "/nope") is None
    m = hit(r, "/svc1/users/2")
    assert m is not None and m.considered <= 2


def test_docs_example_config_routes_as_documented() -> None:
    import pathlib

    import yaml

    text = (pathlib.Path(__file__).parents[2] / "docs" / "routing.md").read_text()
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    routes = [RouteConfig.model_validate(r) for r in yaml.safe_load(block)["routes"]]
    r = Router(routes)
    v2 = Headers.from_pairs([("x-version", "2"), ("x-client", "mobile-ios")])
    m = r.match("api.example.com", "GET", "/users/7", v2)
    assert m is not None and m.pattern == "/users/{id}" and m.params == {"id": "7"}
    m = r.match("eu.api.example.com", "POST", "/files/a/b", v2)
    assert m is not None and m.params == {"rest": "a/b"}
    assert r.match("api.example.com", "GET", "/users/7", NO_HEADERS) is None
    assert r.match("example.com", "GET", "/users/7", v2) is None
    assert r.allowed_methods("api.example.com", "/users/7", v2) == {"GET", "POST"}


def test_header_regex_full_match_unless_it_anchors_itself() -> None:
    from portway.config.schema import RouteConfig
    from portway.http.headers import Headers
    from portway.routing.router import Router

    r = Router(
        [
            RouteConfig.model_validate(
                {
                    "name": "web",
                    "match": {
                        "paths": ["/helloworld.Greeter/"],
                        "headers": {"content-type": "~^application/grpc-web"},
                    },
                }
            ),
            RouteConfig.model_validate(
                {"name": "v", "match": {"paths": ["/v"], "headers": {"x-v": "~v[0-9]+"}}}
            ),
            RouteConfig.model_validate(
                {"name": "grpc", "match": {"paths": ["/helloworld.Greeter/"]}}
            ),
        ]
    )

    def name(path: str, **h: str) -> str | None:
        m = r.match(
            "", "POST", path, Headers.from_pairs([(k.replace("_", "-"), v) for k, v in h.items()])
        )
        return m.route.name if m is not None else None

    for ct in ("application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text"):
        assert name("/helloworld.Greeter/SayHello", content_type=ct) == "web", ct
    assert name("/helloworld.Greeter/SayHello", content_type="application/grpc") == "grpc"
    assert name("/v", x_v="v12") == "v"
    assert name("/v", x_v="v1x") is None and name("/v", x_v="xv1") is None


def test_an_exact_form_with_parameters_is_its_template() -> None:
    # the aggregate example: `=/pages/product/{id}`
    from portway.config.schema import RouteConfig
    from portway.http.headers import Headers
    from portway.routing.router import Router

    r = Router(
        [RouteConfig.model_validate({"name": "p", "match": {"paths": ["=/pages/product/{id}"]}})]
    )
    m = r.match("", "GET", "/pages/product/7", Headers())
    assert m is not None and m.params == {"id": "7"}
    assert r.match("", "GET", "/pages/product/7/more", Headers()) is None
    assert r.match("", "GET", "/pages/product", Headers()) is None


def test_traffic_conditions_and_profiles_read_header_regexes_like_routes() -> None:
    # one meaning of "~regex" everywhere a header is matched (routing/entry.header_regex)
    from portway.http.headers import Headers
    from portway.routing.conditions import _value_test
    from portway.routing.entry import HeaderCondition

    unanchored = _value_test("~v[0-9]+")
    assert unanchored(b"v12") and not unanchored(b"v1x") and not unanchored(b"xv1")
    assert _value_test("~^application/grpc-web")(b"application/grpc-web+proto")
    cond = HeaderCondition("x-client", "~mobile-.*")
    assert cond.satisfied(Headers.from_pairs([("x-client", "mobile-ios")]))
    assert not cond.satisfied(Headers.from_pairs([("x-client", "notmobile-ios")]))
