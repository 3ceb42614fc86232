"""The bytes the task-free path (``proxy/fast.py``) writes itself: the upstream request head,
a relayed head without the lines response hooks replace, and a whole answer a request hook
made. Every rule comes from ``http/forwarding.py`` / ``http/relay.py``; this module only
spells them straight into bytes, the lite way (see ``proxy/fast.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portway.http.client import build_request_head, request_line_parts
from portway.http.forwarded import ForwardMemo
from portway.http.forwarding import (
    forward_header_items,
    forward_header_lines,
    forward_lite_head,
    forward_lite_lines,
    needs_zero_length,
    with_forwarded_prefix,
)
from portway.http.models import Request, Response
from portway.http.path import has_percent
from portway.http.relay import FRAMING, add_connection_field, no_body, without_framing
from portway.http.wire import append_fields, status_line
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import Replaces
from portway.proxy.forward import upstream_path

if TYPE_CHECKING:
    from portway.runtime.graph import RouteRuntime, RuntimeGraph
    from portway.upstream.target import Target


def request_head(
    req: Request,
    rt: RouteRuntime,
    graph: RuntimeGraph,
    target: Target,
    ctx: RequestContext,
    memo: ForwardMemo,
) -> bytes:
    # ``req`` itself unless a hook may have edited it; a hook's pending field edit
    # (``RequestContext.edit_upstream_fields``) is applied below, as the fields are written
    ureq = ctx.upstream_unedited
    new_host = rt.upstream_host(ureq.host, target)
    path, prefix = upstream_path(rt, ctx.match, ureq.path)
    query = ureq.query
    if prefix is not None:
        target_s = path + "?" + query.decode("latin-1") if query else path
        items = forward_header_items(req, ctx.upstream_items(), graph.via, new_host)
        items = with_forwarded_prefix(items, prefix)
        if needs_zero_length(ureq.method):
            items.append((b"content-length", b"0"))
        return build_request_head(ureq.method, target_s, items)
    # the common case straight into bytes: no field list, fewer pieces to join; the
    # client's own request line and field lines copied when the lite parser read them
    # (``ureq`` is then the client's request: a copy has no ``lite_head``)
    lite = ureq.lite_head
    line = -1 if lite is None else _lite_request_line(ureq, path, query)
    if line > 0 and ctx.up_add is None:
        # the usual request: no edit pending, no line to cut (one join of five pieces)
        head = forward_lite_head(ureq, graph.via, new_host, line, memo)
        if head is not None:
            return head
    if line > 0:
        assert lite is not None
        parts = [lite[:line]]
    else:
        parts = request_line_parts(ureq.method, path, query)
    if lite is None or not forward_lite_lines(
        ureq, graph.via, new_host, parts, memo, ctx.up_drop, ctx.up_add, ctx.up_lines
    ):
        raw = ureq.headers.raw()
        forward_header_lines(
            req, raw, graph.via, new_host, parts, memo, ctx.up_drop, ctx.up_add, ctx.up_lines
        )
    if needs_zero_length(ureq.method):
        parts.append(b"content-length: 0\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _lite_request_line(req: Request, path: str, query: bytes) -> int:
    """The length of the client's request line (the start of its lite head: HTTP/1.1, one
    space either side of an origin-form target, CRLF) when the upstream's would be the
    same bytes: the path forwarded as received (no rewrite, and normalising changed
    nothing: it only ever shortens a path or upper-cases a ``%`` escape); -1 otherwise."""
    url = req.raw_target
    n = len(url)
    if path is not req.path or (len(path) + 1 + len(query) if query else len(path)) != n:
        return -1
    if has_percent(path):
        return -1
    return len(req.method) + n + 12  # "METHOD SP target SP HTTP/1.1 CRLF"


def without_replaced(
    fields: list[bytes], reps: list[Replaces], every: Replaces | None
) -> list[bytes]:
    """``fields`` (runs of whole validated lines) without the lines whose names response
    hooks replace (``pipeline/runner.py:replace_fields``, the general path's rule). Upstreams
    rarely send such names: one lower-cased copy of the lines and one regex search per hook
    that set fields (a ``bytes.find`` per name costs more: each parses its arguments, and
    ``in`` first tries the needle as an int, formatting a TypeError); the lines are split only
    when a name is found. ``every`` (``Chain.field_names``, every name the chain's hooks may
    replace) is searched first: when none is there, no search per hook."""
    low = (b"\n" + b"".join(fields)).lower()
    if every is not None and every.pattern.search(low) is None:
        return fields
    names: frozenset[bytes] | None = None
    for rep in reps:
        if rep.pattern.search(low) is not None:
            names = rep.names if names is None else names | rep.names
    if names is None:
        return fields
    kept: list[bytes] = []
    for run in fields:
        for line in run.split(b"\r\n"):
            if line and line[: line.find(b":")].lower() not in names:
                kept.append(line + b"\r\n")
    return kept


def answer_bytes(req: Request, resp: Response, body: bytes) -> tuple[bytes, int, bool]:
    """A request hook's whole answer ``resp`` (``body`` after the chunk hooks) as bytes:
    its head framed by Content-Length (a prebuilt head, :meth:`Response.set_raw_fields`,
    from its lines as they are), then the body unless the status or method has none.
    Returns (bytes, head size, bodiless)."""
    status = resp.status
    empty = no_body(req.method, status)
    out = [status_line(status, resp.reason)]
    size = len(out[0]) + 2
    raw = resp.raw_fields()
    if raw is not None:
        runs, extra = raw
        for run in runs:
            out.append(run)
            size += len(run)
        items = [kv for kv in extra if kv[0] not in FRAMING]
    else:
        items = without_framing(resp.headers.raw())
    if not empty or req.method == "HEAD":
        items.append((b"content-length", str(len(body)).encode()))
    add_connection_field(items, req, True)
    size += append_fields(out, items)
    out.append(b"\r\n")
    if not empty:
        out.append(body)
    return b"".join(out), size, empty
