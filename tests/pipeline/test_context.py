"""RequestContext and typed per-request state."""

from __future__ import annotations

from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import ContextKey, RequestContext, State


def _req() -> Request:
    return Request(method="GET", path="/a", query=b"x=1", headers=Headers([(b"host", b"h")]))


def test_keys_compare_by_identity_not_name() -> None:
    a: ContextKey[int] = ContextKey("same")
    b: ContextKey[int] = ContextKey("same")
    s = State()
    s[a] = 1
    assert a in s and b not in s
    assert s.get(b) is None and s.get(b, 7) == 7
    s[b] = 2
    assert (s[a], s[b]) == (1, 2)
    assert repr(a) == "ContextKey('same')"


def test_state_get_pop_and_missing_key() -> None:
    k: ContextKey[list[str]] = ContextKey("k")
    s = State()
    try:
        s[k]
    except KeyError:
        pass
    else:  # pragma: no cover - the assertion below documents the contract
        raise AssertionError("missing key must raise KeyError")
    s[k] = ["x"]
    value: list[str] | None = s.pop(k)
    assert value == ["x"] and k not in s and s.pop(k) is None


def test_upstream_request_is_a_copy_and_context_starts_empty() -> None:
    req = _req()
    ctx = RequestContext(req, request_id="rid")
    ctx.upstream_request.headers.set("x-added", "1")
    ctx.upstream_request.path = "/rewritten"
    assert req.headers.get("x-added") is None and req.path == "/a"
    assert ctx.request_id == "rid" and ctx.response is None and ctx.route_name is None
    assert ctx.params == {} and ctx.attempt == 0 and ctx.reached is None


def test_state_is_per_request() -> None:
    k: ContextKey[str] = ContextKey("per-request")
    one, two = RequestContext(_req()), RequestContext(_req())
    one.state[k] = "one"
    assert two.state.get(k) is None


def test_record_only_when_tracing() -> None:
    ctx = RequestContext(_req())
    ctx.record("on_request", "p", 1.0)
    assert ctx.trace is None
    ctx.trace = []
    ctx.record("on_request", "p", 1.5, "continue")
    assert [(t.what, t.name, t.ms, t.detail) for t in ctx.trace] == [
        ("on_request", "p", 1.5, "continue")
    ]
