"""Per-request debugging (``X-Portway-Debug``).

A request carrying ``X-Portway-Debug: <server.debug_token>`` (compared in constant time) is
traced: the data plane sets ``ctx.debug = True`` and ``ctx.trace = []`` and records steps with
``ctx.record(what, name, ms, detail)`` using these conventions:

- plugin phases: ``what`` is the phase (``"on_request"``, ``"on_response"``…), ``name`` the
  plugin, ``detail`` its decision (``"continue"``, ``"respond 401"``, ``"error: …"``);
- upstream attempts: ``what="attempt"``, ``name`` the target id, ``detail`` the outcome
  (``"200"``, ``"connect_error"``…), ``ms`` its duration;
- anything else (``"route"``, ``"cache"``…) is reported as a generic step.

The response then gets an ``X-Portway-Debug`` header with :func:`debug_header`; with
``?explain`` in the query the data plane answers :func:`explain` as JSON instead of proxying.
Without the right token the header means nothing and is stripped before forwarding
(:func:`strip_debug_header`), so a client cannot probe for the token or leak it upstream.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from portway.digest import compare_digest

if TYPE_CHECKING:
    from portway.http.headers import Headers
    from portway.http.models import Request, Response
    from portway.pipeline.context import RequestContext, TraceEvent

DEBUG_HEADER = "x-portway-debug"
_DEBUG_HEADER_B = DEBUG_HEADER.encode()
#: upper bound of the response header value; long plugin chains are elided
MAX_HEADER_CHARS = 2048
_UNSAFE = re.compile(r"[^\x21-\x7e ]|[;,=]")
_PHASE_PREFIX = "on_"


def debug_requested(request: Request, token: str | None) -> bool:
    """Whether ``request`` carries the debug token (constant time; ``None`` disables)."""
    if not token:
        return False
    value = request.headers.get_raw(_DEBUG_HEADER_B)
    if value is None:
        return False
    return compare_digest(value.strip(), token.encode("utf-8"))


def strip_debug_header(headers: Headers) -> None:
    """Remove ``X-Portway-Debug`` from a request about to be forwarded."""
    headers.remove(_DEBUG_HEADER_B)


def wants_explain(request: Request) -> bool:
    """Whether the query string has an ``explain`` parameter (``?explain`` or ``explain=…``)."""
    q = request.query
    if not q or b"explain" not in q:
        return False
    for part in q.split(b"&"):
        name = part.split(b"=", 1)[0]
        if name == b"explain":
            return True
    return False


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _why_host(hosts: list[str], host: str) -> str:
    if not hosts:
        return "any host"
    h = host.lower()
    bare = h.rsplit(":", 1)[0] if ":" in h and not h.endswith("]") else h
    for pat in hosts:
        if pat in (h, bare):
            return f"host {pat}"
        if pat.startswith("*.") and (bare.endswith(pat[1:]) or h.endswith(pat[1:])):
            return f"host {pat}"
    return f"host in {hosts}"


def _route_info(ctx: RequestContext) -> dict[str, Any] | None:
    m = ctx.match
    if m is None:
        return None
    route = m.route
    mc = route.match
    req = ctx.request
    why = {
        "host": _why_host(list(mc.hosts), req.host),
        "path": f"path {m.pattern}" if m.pattern else "path",
        "method": f"method {req.method}" if mc.methods else "any method",
    }
    if mc.headers:
        why["headers"] = ", ".join(sorted(mc.headers))
    return {
        "name": route.name,
        "index": m.index,
        "pattern": m.pattern,
        "prefix": m.prefix,
        "params": dict(m.params),
        "considered": m.considered,
        "upstream": route.upstream,
        "matched": why,
    }


def _relaxed(route: Any, keep: str) -> Any:
    """``route`` with every match condition but ``keep`` lifted (paths become ``/``)."""
    mc = route.match
    update: dict[str, Any] = {"hosts": [], "paths": ["/"], "methods": [], "headers": {}}
    update[keep] = getattr(mc, keep)
    return route.model_copy(update={"match": mc.model_copy(update=update)})


def why_not(route: Any, request: Request) -> list[str]:
    """Why ``route`` does not match ``request``, one reason per failing condition (empty when
    it does match). Each condition is tried with the real router, alone."""
    from portway.routing.router import Router

    mc = route.match
    req = request
    out: list[str] = []
    checks = (
        ("paths", f"path {req.path} matches none of {list(mc.paths)}"),
        ("hosts", f"host {req.host} matches none of {list(mc.hosts)}"),
        ("methods", f"method {req.method} not in {list(mc.methods)}"),
        ("headers", f"headers do not match {dict(mc.headers)}"),
    )
    for keep, reason in checks:
        if keep != "paths" and not getattr(mc, keep):
            continue
        try:
            hit = Router([_relaxed(route, keep)]).match(req.host, req.method, req.path, req.headers)
        except ValueError:
            hit = None
        if hit is None:
            out.append(reason)
    return out


def other_routes(routes: Any, request: Request, chosen: int | None) -> list[dict[str, Any]]:
    """For every route but the chosen one: why it was not taken (its failing conditions, or
    that it matched too but ranks below the chosen route)."""
    out: list[dict[str, Any]] = []
    for i, r in enumerate(routes):
        if i == chosen:
            continue
        reasons = why_not(r, request)
        if not reasons:
            reasons = ["matches too, but ranks below the chosen route (see `portway routes`)"]
        out.append({"name": r.name, "index": i, "not_matched": reasons})
    return out


def _rejection(ctx: RequestContext) -> dict[str, Any] | None:
    """The plugin that answered instead of the upstream, and why."""
    name = ctx.extra.get("rejected_by")
    if not name:
        return None
    phase = None
    for ev in ctx.trace or []:
        if ev.name == name and ev.what.startswith(_PHASE_PREFIX) and ev.detail != "continue":
            phase = ev.what
    err = ctx.error
    resp = ctx.response
    status = getattr(err, "status", None) or (resp.status if resp is not None else None)
    reason: str | None = str(getattr(err, "message", "") or err) if err is not None else None
    if reason is None and resp is not None and isinstance(resp.body, bytes) and resp.body:
        try:
            import orjson

            body = orjson.loads(resp.body)
            if isinstance(body, dict):
                reason = body.get("error") or body.get("message")
        except ValueError:
            reason = None
    return {
        "plugin": name,
        "phase": phase or "on_request",
        "status": status,
        "reason": reason or f"answered {status}",
    }


def _split_events(events: list[TraceEvent]) -> tuple[list[Any], list[Any], list[Any]]:
    plugins: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for ev in events:
        if ev.what.startswith(_PHASE_PREFIX):
            plugins.append(
                {"plugin": ev.name, "phase": ev.what, "ms": round(ev.ms, 3), "decision": ev.detail}
            )
        elif ev.what == "attempt":
            attempts.append({"target": ev.name, "ms": round(ev.ms, 3), "outcome": ev.detail})
        else:
            steps.append(
                {"what": ev.what, "name": ev.name, "ms": round(ev.ms, 3), "detail": ev.detail}
            )
    return plugins, attempts, steps


def _path_info(ctx: RequestContext) -> dict[str, Any]:
    """How this request is served (an explained request always takes a task: "general") and
    how this worker served the route's requests so far (task-free, general, fallback)."""
    from portway.observability.metrics import get_metrics
    from portway.pipeline.context import SERVED_LABELS

    m = ctx.match
    return {
        "this_request": SERVED_LABELS[ctx.served],
        "route_requests": None if m is None else get_metrics().route_paths(m.name),
    }


def explain(ctx: RequestContext, routes: Any = None) -> dict[str, Any]:
    """Everything known about how ``ctx`` was (or would be) handled, JSON-serialisable.

    Keys: ``request_id``, ``request`` (method, path, host, query), ``route`` (``None`` when no
    route matched; else name, pattern, params, routes considered and what matched), ``consumer``
    (username or ``None``; never credentials), ``plugins`` (phase timings and decisions),
    ``upstream`` (name, chosen target, attempts), ``path`` (the serving path of this request
    and the route's counts by path), ``traffic`` (the variant chosen by the route's
    split/versions/fallback rules and why, or ``None``), ``steps``, ``response``,
    ``rejected_by`` (plugin, phase, status and reason of a plugin that answered instead of the
    upstream), ``error`` and ``total_ms``; with ``routes`` (the config's routes) also
    ``routes_not_taken``: every other route and why it did not match.
    """
    req = ctx.request
    plugins, attempts, steps = _split_events(ctx.trace or [])
    target = ctx.target
    consumer = ctx.consumer
    resp = ctx.response
    out: dict[str, Any] = {
        "request_id": ctx.request_id or None,
        "request": {
            "method": req.method,
            "path": req.path,
            "host": req.host,
            "query": req.query.decode("latin-1"),
        },
        "route": _route_info(ctx),
        "path": _path_info(ctx),
        "consumer": None
        if consumer is None
        else {"username": consumer.username, "anonymous": consumer.anonymous},
        "plugins": plugins,
        "upstream": None
        if ctx.upstream_name is None and target is None
        else {
            "name": ctx.upstream_name,
            "target": getattr(target, "id", None),
            "attempts": max(ctx.attempt, len(attempts)),
            "latency_ms": None if ctx.upstream_latency is None else _ms(ctx.upstream_latency),
            "tries": attempts,
        },
        "traffic": _traffic(ctx),
        "steps": steps,
        "response": None if resp is None else {"status": resp.status, "upstream": resp.upstream},
        "rejected_by": _rejection(ctx),
        "error": None
        if ctx.error is None
        else {
            "type": type(ctx.error).__name__,
            "code": getattr(ctx.error, "code", None),
            "message": str(getattr(ctx.error, "message", ctx.error)),
        },
        "profile": ctx.extra.get("profile"),
        "graphql_operation": ctx.extra.get("graphql_operation"),
        "aggregate": ctx.extra.get("aggregate"),
        "total_ms": _ms(time.perf_counter() - ctx.start),
    }
    if routes is not None:
        m = ctx.match
        out["routes_not_taken"] = other_routes(routes, req, m.index if m is not None else None)
    return out


def _traffic(ctx: RequestContext) -> dict[str, Any] | None:
    """The variant a route's traffic rules chose (split, versions, fallback)."""
    from portway.upstream.choice import CHOICE

    if ctx._state is None:
        return None
    c = ctx.state.get(CHOICE)
    return None if c is None else c.describe()


def explain_response(ctx: RequestContext, routes: Any) -> Response:
    """The ``?explain`` answer for a request that has been handled (proxied, or answered by a
    plugin or an error): the explanation as JSON, with the status the request really got."""
    from portway.http.models import Response

    status = ctx.response.status if ctx.response is not None else 200
    resp = Response.json(status, explain(ctx, routes))
    resp.headers.set("cache-control", "no-store")
    return resp


def _safe(v: object) -> str:
    return _UNSAFE.sub("_", str(v))


def debug_header(ctx: RequestContext) -> str:
    """A compact ``key=value; …`` summary for the ``X-Portway-Debug`` response header.

    Keys: ``route``, ``upstream``, ``target``, ``attempts``, ``plugins`` (``name:phase:ms``
    separated by ``,``, decisions other than continue appended as ``:decision``), ``total``.
    Values are ASCII with separators replaced, so the header is always valid.
    """
    plugins, attempts, _ = _split_events(ctx.trace or [])
    parts = [f"route={_safe(ctx.route_name or '-')}"]
    if ctx.upstream_name is not None:
        parts.append(f"upstream={_safe(ctx.upstream_name)}")
    t = _traffic(ctx)
    if t is not None:
        parts.append(f"variant={_safe(t['variant'])}")
    target = ctx.target
    if target is not None:
        parts.append(f"target={_safe(getattr(target, 'id', target))}")
    n_attempts = max(ctx.attempt, len(attempts))
    if n_attempts:
        parts.append(f"attempts={n_attempts}")
    if ctx.upstream_latency is not None:
        parts.append(f"upstream_ms={_ms(ctx.upstream_latency)}")
    rej = ctx.extra.get("rejected_by")
    if rej:
        parts.append(f"rejected_by={_safe(rej)}")
    items = []
    for p in plugins:
        s = f"{_safe(p['plugin'])}:{_safe(p['phase'])}:{p['ms']}ms"
        if p["decision"] and p["decision"] != "continue":
            s += f":{_safe(p['decision'])}"
        items.append(s)
    total = f"total={_ms(time.perf_counter() - ctx.start)}ms"
    head = "; ".join(parts)
    budget = MAX_HEADER_CHARS - len(head) - len(total) - 20
    shown: list[str] = []
    used = 0
    for s in items:
        if used + len(s) + 1 > budget:
            shown.append(f"+{len(items) - len(shown)}more")
            break
        shown.append(s)
        used += len(s) + 1
    if shown:
        head += f"; plugins={','.join(shown)}"
    return f"{head}; {total}"
