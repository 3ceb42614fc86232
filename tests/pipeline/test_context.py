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


Pairs = list[tuple[bytes, bytes]]
EDITS: list[tuple[frozenset[bytes] | None, Pairs, bytes | None]] = [
    (frozenset({b"apikey", b"x-consumer-id"}), [(b"x-consumer-id", b"7")], b"x-consumer-id: 7\r\n"),
    (None, [(b"x-request-id", b"r1")], b"x-request-id: r1\r\n"),
    (frozenset({b"x-request-id"}), [(b"x-b", b"2"), (b"x-request-id", b"r2")], None),
    (frozenset({b"x-b", b"h"}), [], b""),
]


def _in_place(
    raw: Pairs, edits: list[tuple[frozenset[bytes] | None, Pairs, bytes | None]]
) -> Pairs:
    h = Headers.adopt(list(raw))
    for drop, add, _ in edits:
        if drop is not None:
            h.remove_many(drop)
        h.raw().extend(add)
    return h.raw()


def test_a_pending_edit_reads_as_the_edited_copy() -> None:
    """``edit_upstream_fields`` on the shared request keeps the edit pending (no copy); the
    first read of ``upstream_request`` applies it to a copy: every combination of edits
    reads as the same edits made in place on a copy, and the client's request is never
    touched."""
    raw: Pairs = [(b"h", b"1"), (b"apikey", b"k"), (b"x-consumer-id", b"forged"), (b"x-b", b"0")]
    for n in range(1, len(EDITS) + 1):
        for start in range(len(EDITS) - n + 1):
            edits = EDITS[start : start + n]
            req = Request("GET", "/", b"q=1", Headers.adopt(list(raw)))
            ctx = RequestContext(req, copy=False)
            for drop, add, lines in edits:
                ctx.edit_upstream_fields(drop, add, lines)
            assert ctx.upstream_unedited is req and ctx.up_add is not None
            expected = _in_place(raw, edits)
            assert ctx.upstream_items() == expected
            if ctx.up_lines is not None:
                assert ctx.up_lines == b"".join(k + b": " + v + b"\r\n" for k, v in ctx.up_add)
            up = ctx.upstream_request
            assert up is not req and up.headers.raw() == expected and up.query == b"q=1"
            assert ctx.up_add is None and ctx.upstream_unedited is up
            assert req.headers.raw() == raw
            # later edits go to the copy in place
            ctx.edit_upstream_fields(frozenset({b"h"}), [(b"z", b"9")])
            assert ctx.upstream_request is up
            assert up.headers.raw() == _in_place(
                expected, [(frozenset({b"h"}), [(b"z", b"9")], None)]
            )


def test_setting_the_upstream_request_drops_a_pending_edit() -> None:
    req = _req()
    ctx = RequestContext(req, copy=False)
    ctx.edit_upstream_fields(None, [(b"x", b"1")])
    other = _req()
    ctx.upstream_request = other
    assert ctx.upstream_request is other and ctx.up_add is None
    assert other.headers.raw() == [(b"host", b"h")]
