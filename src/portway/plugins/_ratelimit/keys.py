"""Request keys and costs for limiters, compiled once per binding.

Key parts: ``consumer`` (``ctx.consumer.id``; anonymous or unauthenticated requests fall back
to the client IP so they do not all share one bucket), ``credential`` (the credential that
authenticated; falls back to the IP), ``ip`` (``ctx.request.client_ip``, already resolved
through trusted proxies), ``header:NAME`` (first value; falls back to the IP when absent, so
omitting the header is not a way around the limit), ``route``, ``service`` (the upstream name),
``graphql_operation`` (the operation name the ``graphql`` plugin parsed, which must run
before the limiter; requests without one share the ``-`` bucket), ``profile`` (the BFF
profile) and ``global`` (one bucket for everything the binding sees).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final

from portway.errors import BadRequestError
from portway.pipeline.context import RequestContext
from portway.plugins.graphql.context import GRAPHQL_OPERATION

KeyFn = Callable[[RequestContext], str]
CostFn = Callable[[RequestContext], int]

_HEADER: Final = re.compile(r"^header:([!#$%&'*+.^_`|~0-9A-Za-z-]+)$")
SIMPLE_PARTS: Final = frozenset(
    {"consumer", "credential", "ip", "route", "service", "global", "graphql_operation", "profile"}
)
MAX_COST: Final = 1_000_000_000


def check_key_part(part: str) -> str:
    if part in SIMPLE_PARTS or _HEADER.match(part):
        return part
    raise ValueError(
        f"invalid key part {part!r}: use consumer, credential, ip, header:NAME, route, "
        "service, graphql_operation, profile or global"
    )


def check_cost(v: int | str) -> int | str:
    if isinstance(v, int):
        if not 0 <= v <= MAX_COST:
            raise ValueError(f"cost must be between 0 and {MAX_COST}")
        return v
    if _HEADER.match(v):
        return v
    raise ValueError("cost must be a non-negative integer or header:NAME")


def _ip(ctx: RequestContext) -> str:
    return _prefixed(_IP_KEYS, "ip:", ctx.request.client_ip)


#: keys built before, per prefix and part: the part is a string the request shares with
#: others (a consumer's id, a connection's client address), whose hash is kept, and the key
#: comes back as the same string, whose hash the limiter's lookup then finds kept too (no
#: concatenation, no hashing of a fresh string per request); bounded, cleared when full
_IP_KEYS: Final[dict[str, str]] = {}
_CONSUMER_KEYS: Final[dict[str, str]] = {}
_MAX_KEYS: Final = 4096


def _prefixed(table: dict[str, str], prefix: str, part: str) -> str:
    key = table.get(part)
    if key is None:
        if len(table) >= _MAX_KEYS:
            table.clear()
        key = table[part] = prefix + part
    return key


def consumer_key(ctx: RequestContext) -> str:
    """The ``consumer`` part (the key of a ``key: [consumer]`` binding): limiters compiled
    with this module call it directly when :func:`compile_key` returned it."""
    c = ctx.consumer
    if c is None or c.anonymous:
        return _prefixed(_IP_KEYS, "ip:", ctx.request.client_ip)
    return _prefixed(_CONSUMER_KEYS, "c:", c.id)


def _credential(ctx: RequestContext) -> str:
    c = ctx.consumer
    if c is None or c.anonymous or not c.credential:
        return "ip:" + ctx.request.client_ip
    return "k:" + c.credential


def _route(ctx: RequestContext) -> str:
    return "r:" + (ctx.route_name or "")


def _service(ctx: RequestContext) -> str:
    name = ctx.upstream_name
    if name is None and ctx.match is not None:
        name = ctx.match.route.upstream
    return "s:" + (name or "")


def _graphql_operation(ctx: RequestContext) -> str:
    return "g:" + (ctx.state.get(GRAPHQL_OPERATION) or "-")


def _profile(ctx: RequestContext) -> str:
    return "p:" + str(ctx.extra.get("profile") or "-")


def _global(ctx: RequestContext) -> str:
    return "*"


def _header(name: str) -> KeyFn:
    raw = name.lower().encode("latin-1")

    def fn(ctx: RequestContext) -> str:
        v = ctx.request.headers.get_raw(raw)
        if v is None:
            return "ip:" + ctx.request.client_ip
        return "h:" + v.decode("latin-1")

    return fn


_SIMPLE: Final[dict[str, KeyFn]] = {
    "consumer": consumer_key,
    "credential": _credential,
    "ip": _ip,
    "route": _route,
    "service": _service,
    "global": _global,
    "graphql_operation": _graphql_operation,
    "profile": _profile,
}


def compile_key(parts: Sequence[str]) -> KeyFn:
    """One function building the request's key from ``parts`` (validated with
    :func:`check_key_part`)."""
    fns = [_SIMPLE[p] if p in _SIMPLE else _header(p.partition(":")[2]) for p in parts]
    if len(fns) == 1:
        return fns[0]

    def joined(ctx: RequestContext) -> str:
        return "|".join([f(ctx) for f in fns])

    return joined


def compile_cost(cost: int | str) -> CostFn:
    """Cost of a request: a constant, or a header's non-negative integer value (1 when the
    header is absent; an invalid value is answered 400)."""
    if isinstance(cost, int):
        const = cost

        def fixed(ctx: RequestContext) -> int:
            return const

        return fixed
    name = cost.partition(":")[2]
    raw = name.lower().encode("latin-1")

    def from_header(ctx: RequestContext) -> int:
        v = ctx.request.headers.get_raw(raw)
        if v is None:
            return 1
        v = v.strip(b" \t")
        if not v.isdigit() or len(v) > 10 or int(v) > MAX_COST:
            raise BadRequestError(
                f"invalid {name} header: expected an integer from 0 to {MAX_COST}",
                code="invalid_cost",
            )
        return int(v)

    return from_header
