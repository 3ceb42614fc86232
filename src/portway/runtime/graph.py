"""The immutable compiled runtime: what one config version serves with."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

from portway.config.schema import GatewayConfig, RouteConfig, TimeoutsConfig
from portway.http.forwarded import TrustedProxies
from portway.observability.observer import Observer
from portway.observability.tracing import NOOP_TRACER, Tracer
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin
from portway.pipeline.runner import Chain
from portway.proxy.traffic import RoutePolicy
from portway.routing.router import Router
from portway.upstream.target import Target
from portway.upstream.upstream import Upstream

log: Final = logging.getLogger("portway.proxy")


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    config: RouteConfig
    chain: Chain
    upstream: Upstream | None
    timeouts: TimeoutsConfig
    max_body: int | None
    #: ``rewrite`` split into literal/param parts for cheap formatting
    rewrite: tuple[tuple[bool, str], ...] | None
    preserve_host: bool
    # copied out of ``config`` and ``timeouts`` by the builder: attribute reads on pydantic
    # models cost several times more, and the task-free path reads these on every request
    strip_prefix: bool
    encoded_slashes: bool
    read_timeout: float
    total_timeout: float
    #: how long one attempt may wait for its response head: ``retries.per_try_timeout``
    #: when set (capped by the total), else the total
    try_timeout: float
    #: WebSocket upgrades are tunnelled on this route
    websocket: bool = True
    #: request bodies up to this many bytes are read whole before forwarding (None: stream)
    buffer_max: int | None = None
    #: split / versions / mirror / fallback (``proxy/traffic.py``); ``None`` for most routes
    traffic: RoutePolicy | None = None
    #: ``proxy/aggregate.AggregatePlan`` of an aggregate route (which has no ``upstream``)
    aggregate: Any = None
    #: with BFF profiles: the chain per profile this route serves (``"default"`` when no
    #: profile matched); a profile missing here is not served by the route (404)
    profile_chains: Any = None

    def upstream_host(self, client_host: str, target: Target) -> bytes | None:
        """The Host the upstream request carries in place of the client's, or None to keep
        the client's: the target's unless ``preserve_host``, and the target's for a request
        with no Host either (HTTP/1.0: the upstream hop is HTTP/1.1). Every upstream
        protocol and path asks here."""
        return None if self.preserve_host and client_host else target.host_value()


@dataclass(eq=False)
class RuntimeGraph:
    """Everything needed to serve requests for one config version.

    Built whole by :func:`portway.runtime.builder.build_graph` and swapped atomically;
    in-flight requests keep the graph they started with (``inflight`` counts them so the
    old graph can be closed once drained).
    """

    config: GatewayConfig
    router: Router
    routes: list[RouteRuntime]
    upstreams: dict[str, Upstream]
    global_chain: Chain
    plugins: list[Plugin[Any]]
    trusted: TrustedProxies
    via: bytes | None
    debug_token: bytes | None
    config_hash: str = ""
    observers: list[Observer] = field(default_factory=list)
    inflight: int = 0
    version: int = 0
    shared_keys: frozenset[str] = frozenset()
    tracer: Tracer = NOOP_TRACER
    #: request header names the configuration makes the gateway set (identity_headers
    #: claims, request_id's header) beyond ``http/owned.py:OWNED``
    owned_headers: frozenset[bytes] = frozenset()
    #: no route has request hooks or header conditions, no trusted proxies, no debug
    #: token: a lite request head's fields are left unread (``Headers.unread``), as most
    #: requests are then forwarded without a look at them (a reader still gets them,
    #: built on first use, at a price)
    fields_unread: bool = False
    #: ``proxy/profiles.ProfileSelector`` when the config defines BFF profiles
    profiles: Any = None
    #: the Via line this gateway adds to relayed responses (built once, not per response;
    #: empty without ``via``)
    via_line: bytes = field(init=False, default=b"")
    #: ``tracer.enabled``, read per request by the task-free path: a native bool of this
    #: compiled class (the tracer's is an attribute of an interpreted one). Set with the
    #: tracer (``__post_init__``, :meth:`set_tracer`); a tracer's ``enabled`` never changes
    tracing: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.via_line = b"via: 1.1 " + self.via + b"\r\n" if self.via is not None else b""
        self.tracing = self.tracer.enabled

    def set_tracer(self, tracer: Tracer) -> None:
        """Replace the tracer (the builder, before the graph goes live)."""
        self.tracer = tracer
        self.tracing = tracer.enabled

    def request_done(self, chain: Chain, ctx: RequestContext) -> None:
        """After a request's last byte (whatever path served it): the route's ``on_log``
        hooks, then the observers. Never raises."""
        if chain.on_log:
            chain.run_log(ctx)
        for obs in self.observers:
            try:
                obs.on_request_done(ctx)
            except Exception:
                log.exception("observer failed")


class GraphSlot:
    """Holds the current graph; calling it returns that graph (``ProxyApp``'s ``graph_ref``).

    A compiled class, so reading the current graph for each request is a C call rather than
    an interpreted method. The gateway swaps ``current`` whole on reload.
    """

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: RuntimeGraph | None = None

    def __call__(self) -> RuntimeGraph:
        g = self.current
        assert g is not None, "gateway not started"
        return g
