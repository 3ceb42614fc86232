"""Per-request debugging: token check, explain document, debug header."""

from __future__ import annotations

import orjson

from portway.http.headers import Headers
from portway.observability.debug import (
    MAX_HEADER_CHARS,
    debug_header,
    debug_requested,
    explain,
    strip_debug_header,
    wants_explain,
)
from portway.upstream.upstream import make_target
from tests.observability.support import make_ctx


def test_token_checked_exactly() -> None:
    ctx = make_ctx(headers=[("X-Portway-Debug", "s3cret")])
    assert debug_requested(ctx.request, "s3cret")
    assert not debug_requested(ctx.request, "s3cret2")
    assert not debug_requested(ctx.request, None)
    assert not debug_requested(ctx.request, "")
    assert not debug_requested(make_ctx().request, "s3cret")
    assert not debug_requested(make_ctx(headers=[("x-portway-debug", "s3cre")]).request, "s3cret")


def test_strip_header() -> None:
    h = Headers.from_pairs([("X-Portway-Debug", "x"), ("accept", "*/*")])
    strip_debug_header(h)
    assert list(h) == [("accept", "*/*")]


def test_wants_explain() -> None:
    assert wants_explain(make_ctx(query=b"explain").request)
    assert wants_explain(make_ctx(query=b"a=1&explain=1").request)
    assert not wants_explain(make_ctx(query=b"explained=1").request)
    assert not wants_explain(make_ctx(query=b"").request)


def traced_ctx():  # type: ignore[no-untyped-def]
    ctx = make_ctx(headers=[("x-portway-debug", "t")], status=200, upstream_latency=0.0042)
    ctx.debug = True
    ctx.trace = []
    ctx.record("route", "r", 0.01, "path /")
    ctx.record("on_request", "key_auth", 0.05, "continue")
    ctx.record("on_request", "rate_limit", 0.02, "respond 429")
    ctx.record("attempt", "127.0.0.1:9000", 3.1, "connect_error")
    ctx.record("attempt", "127.0.0.1:9001", 4.2, "200")
    ctx.target = make_target("http://127.0.0.1:9001")
    ctx.attempt = 2
    return ctx


def test_explain_document() -> None:
    doc = explain(traced_ctx())
    orjson.dumps(doc)  # serialisable
    assert doc["route"]["name"] == "r"
    assert doc["route"]["matched"] == {"host": "any host", "path": "path /", "method": "any method"}
    assert doc["route"]["considered"] == 1
    assert [p["plugin"] for p in doc["plugins"]] == ["key_auth", "rate_limit"]
    assert doc["plugins"][1]["decision"] == "respond 429"
    assert doc["upstream"]["target"] == "127.0.0.1:9001"
    assert doc["upstream"]["attempts"] == 2
    assert [a["outcome"] for a in doc["upstream"]["tries"]] == ["connect_error", "200"]
    assert doc["upstream"]["latency_ms"] == 4.2
    assert doc["steps"][0]["what"] == "route"
    assert doc["response"] == {"status": 200, "upstream": False}
    assert doc["total_ms"] >= 0


def test_explain_without_route() -> None:
    doc = explain(make_ctx(route=None, upstream=None, status=404))
    assert doc["route"] is None and doc["upstream"] is None and doc["plugins"] == []


def test_host_wildcard_reason() -> None:
    ctx = make_ctx()
    assert ctx.match is not None
    from portway.config.schema import RouteConfig
    from portway.routing.router import RouteMatch

    rc = RouteConfig.model_validate(
        {"name": "w", "upstream": "u", "match": {"hosts": ["*.test"], "methods": ["GET"]}}
    )
    ctx.match = RouteMatch(rc, 0, {}, "", "/", 3)
    doc = explain(ctx)
    assert doc["route"]["matched"]["host"] == "host *.test"
    assert doc["route"]["matched"]["method"] == "method GET"


def test_debug_header_is_valid_and_compact() -> None:
    v = debug_header(traced_ctx())
    assert v.startswith("route=r; upstream=u; target=127.0.0.1:9001; attempts=2")
    assert "key_auth:on_request:0.05ms" in v and "rate_limit:on_request:0.02ms:respond 429" in v
    assert v.encode("ascii") and all(0x20 <= b < 0x7F for b in v.encode())


def test_debug_header_sanitises_and_bounds() -> None:
    ctx = make_ctx()
    ctx.trace = []
    for i in range(500):
        ctx.record("on_request", f"plugin{i}", 0.1, "x;\r\ny=é")
    v = debug_header(ctx)
    assert len(v) <= MAX_HEADER_CHARS
    assert "\r" not in v and "\n" not in v and "é" not in v
    assert "more" in v
