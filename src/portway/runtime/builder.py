"""Builds a :class:`RuntimeGraph` from a validated config, reusing what did not change."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any

from portway.config.loader import config_hash
from portway.config.schema import GatewayConfig, PluginBinding, RouteConfig, UpstreamTlsConfig
from portway.http.forwarded import TrustedProxies
from portway.http.pool import ConnectionPool
from portway.observability.observer import as_observer
from portway.observability.sources import EJECTIONS, register_counts
from portway.observability.tracing import Tracer, build_tracer
from portway.pipeline.plugin import ConsumerDirectory, Plugin, PluginEnv
from portway.pipeline.registry import registry
from portway.pipeline.runner import Chain
from portway.proxy.traffic import RoutePolicy
from portway.routing.router import Router
from portway.runtime.graph import RouteRuntime, RuntimeGraph
from portway.upstream import ejections
from portway.upstream.target import Target
from portway.upstream.tls import attach as attach_tls
from portway.upstream.upstream import Upstream

#: the upstreams' ejection counters reach the metrics through the registration seam (the
#: upstream layer sits below observability and cannot register itself)
register_counts(EJECTIONS, ejections.counts)

log = logging.getLogger("portway.runtime")

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}")


def _owned_headers(cfg: GatewayConfig) -> frozenset[bytes]:
    """Request header names this configuration makes the gateway set beyond
    ``http/owned.py:OWNED`` (their underscore spellings are dropped on entry)."""
    names: set[bytes] = set()
    for b in [*cfg.plugins, *(b for r in cfg.routes for b in r.plugins)]:
        if b.name == "identity_headers":
            claims = b.config.get("claims")
            if isinstance(claims, dict):
                names.update(str(v).lower().encode("latin-1") for v in claims.values())
        elif b.name == "request_id":
            header = b.config.get("header")
            if isinstance(header, str):
                names.add(header.lower().encode("latin-1"))
    return frozenset(names)


def _buffer_max(r: RouteConfig, cfg: GatewayConfig) -> int | None:
    rb = r.request_buffering or cfg.server.limits.request_buffering
    return rb.max if rb is not None else None


def _try_timeout(up: Upstream | None, total: float) -> float:
    per_try = up.config.retries.per_try_timeout if up is not None else None
    return total if per_try is None else min(per_try, total)


def _compile_rewrite(template: str | None) -> tuple[tuple[bool, str], ...] | None:
    if template is None:
        return None
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _PARAM.finditer(template):
        if m.start() > pos:
            parts.append((False, template[pos : m.start()]))
        parts.append((True, m.group(1)))
        pos = m.end()
    if pos < len(template):
        parts.append((False, template[pos:]))
    return tuple(parts)


class BuildContext:
    """State carried from one graph to the next: pools and shared plugin objects."""

    def __init__(self) -> None:
        self.pools: dict[tuple[str, int, str, str], ConnectionPool] = {}
        self.shared: dict[str, Any] = {}
        self.upstreams: dict[str, tuple[str, Upstream]] = {}
        self.tracer: tuple[str, Tracer] | None = None


def _pool_factory(
    ctx: BuildContext, cfg_json: str, upstream: str = "", tls: UpstreamTlsConfig | None = None
) -> Callable[[Target], ConnectionPool]:
    tls_json = tls.model_dump_json() if tls is not None else ""

    def make(t: Target) -> ConnectionPool:
        # connections made with different TLS settings are never interchangeable
        key = (t.host, t.port, t.scheme, cfg_json + tls_json)
        pool = ctx.pools.get(key)
        if pool is None or pool.closed_pool:
            from portway.config.schema import PoolConfig

            pool = ConnectionPool(
                t.host, t.port, PoolConfig.model_validate_json(cfg_json), t.scheme
            )
            attach_tls(pool, upstream, tls)
            ctx.pools[key] = pool
        return pool

    return make


def _make_upstream(name: str, cfg: Any, make_pool: Callable[[Target], ConnectionPool]) -> Upstream:
    try:
        up = Upstream(name, cfg, make_pool=make_pool)
    except TypeError:
        up = Upstream(name, cfg)
    for t in up.targets:
        if t.pool is None:
            t.pool = make_pool(t)
    return up


def _consumers(cfg: GatewayConfig) -> ConsumerDirectory:
    if not cfg.consumers:
        # the credential parsers import cryptography, argon2 and bcrypt (several MB of a
        # worker's memory): a config without consumers needs none of them
        return ConsumerDirectory()
    try:
        from portway.runtime.consumers import build_consumer_directory
    except ImportError:
        return ConsumerDirectory()
    return build_consumer_directory(cfg.consumers)


def plugin_config(cls: type[Plugin[Any]], raw: dict[str, Any], settings: Any) -> Any:
    """Validate a binding's config; a plugin whose ``store`` is not set follows
    ``state.backend`` (``redis`` → ``store: redis``), so one line moves every limit and cache
    of a cluster to Redis. An explicit ``store`` always wins."""
    state = getattr(settings, "state", None)
    field = cls.Config.model_fields.get("store")
    if (
        field is not None
        and "store" not in raw
        and getattr(state, "backend", "memory") == "redis"
        and "redis" in str(field.annotation)
    ):
        raw = {**raw, "store": "redis"}
    return cls.Config.model_validate(raw)


def instantiate(binding: PluginBinding, env: PluginEnv) -> Plugin[Any]:
    cls = registry.get(binding.name)
    return cls(plugin_config(cls, binding.config or {}, env.settings), env)


def merged_bindings(
    globals_: list[PluginBinding], route: RouteConfig
) -> list[tuple[str, PluginBinding]]:
    """Route bindings replace global ones of the same name; result ordered by stage
    (stable: globals first within a stage)."""
    own = {b.name for b in route.plugins}
    out: list[tuple[str, PluginBinding]] = [("global", b) for b in globals_ if b.name not in own]
    out += [("route", b) for b in route.plugins]
    out = [(w, b) for w, b in out if b.enabled]

    def stage(item: tuple[str, PluginBinding]) -> int:
        try:
            return int(registry.get(item[1].name).stage)
        except LookupError:
            return 99

    return sorted(out, key=stage)


def _route_runtime(
    cfg: GatewayConfig,
    r: RouteConfig,
    chain: Chain,
    up: Upstream | None,
    traffic: RoutePolicy | None = None,
) -> RouteRuntime:
    """``r`` served by ``up`` (its own upstream, or a variant of a traffic rule): timeouts and
    Host handling from the route when it sets them, else from ``up``."""
    from portway.config.schema import TimeoutsConfig

    timeouts = r.timeouts or (
        up.config.timeouts
        if up is not None
        else cfg.upstreams[r.upstream].timeouts
        if r.upstream
        else None
    )
    preserve = r.preserve_host
    if preserve is None:
        preserve = up is None or up.config.host_header == "preserve"
    tc = timeouts or TimeoutsConfig()
    return RouteRuntime(
        config=r,
        chain=chain,
        upstream=up,
        timeouts=tc,
        max_body=r.max_body_bytes
        if r.max_body_bytes is not None
        else cfg.server.limits.max_body_bytes,
        rewrite=_compile_rewrite(r.rewrite),
        preserve_host=preserve,
        strip_prefix=r.strip_prefix,
        encoded_slashes=r.allow_encoded_slashes,
        read_timeout=tc.read,
        total_timeout=tc.total,
        try_timeout=_try_timeout(up, tc.total),
        traffic=traffic,
        websocket=r.websocket,
        buffer_max=_buffer_max(r, cfg),
    )


def _with_traffic(
    cfg: GatewayConfig, r: RouteConfig, rt: RouteRuntime, upstreams: dict[str, Upstream]
) -> RouteRuntime:
    """``rt`` with its :class:`RoutePolicy`; each upstream the rules name gets a runtime of
    its own (same chain, that upstream's timeouts and Host handling), built once."""
    assert rt.upstream is not None
    variants: dict[str, RouteRuntime] = {rt.upstream.name: rt}

    def variant(name: str) -> RouteRuntime:
        v = variants.get(name)
        if v is None:
            v = variants[name] = _route_runtime(cfg, r, rt.chain, upstreams[name])
        return v

    policy = RoutePolicy(r, rt, variant)
    # ``rt`` stays the plain runtime of the route's own upstream (a variant like the others);
    # what the router hands out is a twin carrying the policy
    return _route_runtime(cfg, r, rt.chain, rt.upstream, policy)


def profile_chain(
    base: list[Plugin[Any]], own: dict[str, Plugin[Any]], prof: dict[str, Plugin[Any]]
) -> list[Plugin[Any]]:
    """A route's chain for one profile: the profile's plugins around the route's own.

    Precedence by name: the route's binding > the profile's > the global one. Order: by
    stage (config stages always hold); within a stage the profile's plugins come first, so
    on the request side they run before the route's (and globals'), and on the response side
    (reversed) after them."""
    added = [p for name, p in prof.items() if name not in own]
    replaced = {p.name for p in added}
    rest = [p for p in base if p.name not in replaced]
    return sorted([*added, *rest], key=lambda p: int(p.stage))


def _aggregate(r: RouteConfig, upstreams: dict[str, Upstream], cfg: GatewayConfig) -> Any:
    """The route's :class:`AggregatePlan`: one per-call :class:`RouteRuntime` each, with the
    call's upstream and timeouts (the call's ``timeout`` caps the upstream's total and read)
    and no plugins (the route's run once, around the whole aggregate)."""
    from portway.config.aggregate import dependencies, parse_template
    from portway.config.schema import TimeoutsConfig
    from portway.pipeline.runner import EMPTY_CHAIN
    from portway.plugins._json.paths import parse as parse_path
    from portway.proxy.aggregate import AggregatePlan, CallPlan
    from portway.proxy.aggregate_fields import Shaping

    agg = r.aggregate
    assert agg is not None
    calls: list[CallPlan] = []
    for c in agg.calls:
        up = upstreams[c.upstream]
        ut = up.config.timeouts
        limit = min(c.timeout, agg.timeout) if c.timeout is not None else agg.timeout
        tc = TimeoutsConfig(
            connect=min(ut.connect, limit),
            read=min(ut.read, limit),
            write=min(ut.write, limit),
            total=min(ut.total, limit),
        )
        call_route = RouteConfig(name=f"{r.name}.{c.name}", upstream=c.upstream)
        rt = RouteRuntime(
            config=call_route,
            chain=EMPTY_CHAIN,
            upstream=up,
            timeouts=tc,
            max_body=None,
            rewrite=None,
            preserve_host=up.config.host_header == "preserve",
            strip_prefix=False,
            encoded_slashes=True,
            read_timeout=tc.read,
            total_timeout=tc.total,
            try_timeout=tc.total,
        )
        f = c.fields
        shaping = Shaping(
            target=parse_path(c.target) if c.target else None,
            deny=tuple(parse_path(x) for x in f.deny) if f else (),
            allow=tuple(parse_path(x) for x in f.allow) if f else (),
            rename=tuple((parse_path(k), v) for k, v in f.rename.items()) if f else (),
            group=c.group,
        )
        template = parse_template(c.path)
        calls.append(
            CallPlan(
                name=c.name,
                template=template,
                deps=tuple(sorted(dependencies(template))),
                method=c.method,
                rt=rt,
                timeout=limit,
                required=c.required,
                shaping=shaping,
            )
        )
    max_body = r.max_body_bytes if r.max_body_bytes is not None else None
    return AggregatePlan(
        calls,
        timeout=agg.timeout,
        flat=agg.merge == "flat",
        partial_status=agg.on_partial.status,
        partial_header=agg.on_partial.header,
        max_body=max_body,
    )


async def build_graph(
    cfg: GatewayConfig,
    bctx: BuildContext,
    *,
    observers: list[Any] | None = None,
    version: int = 0,
    forward: Any = None,
) -> RuntimeGraph:
    """Build (but do not start) a graph. Raises on plugin construction errors."""
    upstreams: dict[str, Upstream] = {}
    for name, ucfg in cfg.upstreams.items():
        cfg_json = ucfg.model_dump_json()
        prev = bctx.upstreams.get(name)
        if prev is not None and prev[0] == cfg_json:
            upstreams[name] = prev[1]
            continue
        upstreams[name] = _make_upstream(
            name, ucfg, _pool_factory(bctx, ucfg.pool.model_dump_json(), name, ucfg.tls)
        )
    consumers = _consumers(cfg)
    used: set[str] = set()
    plugins: list[Plugin[Any]] = []

    def env_for(route: str | None) -> PluginEnv:
        env = PluginEnv(
            route=route, consumers=consumers, settings=cfg, _shared=bctx.shared, _used=used
        )
        env.forward = forward
        return env

    global_instances: dict[str, Plugin[Any]] = {}
    for b in cfg.plugins:
        if b.enabled:
            p = instantiate(b, env_for(None))
            global_instances[b.name] = p
            plugins.append(p)
    global_chain = Chain(sorted(global_instances.values(), key=lambda p: int(p.stage)))
    # profile bindings: one instance per profile binding, shared by the routes (like globals)
    profile_instances: dict[str, dict[str, Plugin[Any]]] = {}
    for pname, prof in cfg.profiles.items():
        profile_instances[pname] = {}
        for b in prof.plugins:
            if b.enabled:
                p = instantiate(b, env_for(None))
                profile_instances[pname][b.name] = p
                plugins.append(p)
    routes: list[RouteRuntime] = []
    for r in cfg.routes:
        chain_plugins: list[Plugin[Any]] = []
        own: dict[str, Plugin[Any]] = {}
        for where, b in merged_bindings(cfg.plugins, r):
            if where == "global":
                chain_plugins.append(global_instances[b.name])
            else:
                p = instantiate(b, env_for(r.name))
                plugins.append(p)
                chain_plugins.append(p)
                own[b.name] = p
        if r.match.tls is not None and r.match.tls.client_cert:
            from portway.plugins._tls.required import ClientCertRequired

            chain_plugins.insert(0, ClientCertRequired(r.name))
        profile_chains: dict[str, Chain] | None = None
        if cfg.profiles:
            profile_chains = {}
            served = r.profiles if r.profiles is not None else [*cfg.profiles, "default"]
            for pname in served:
                if pname == "default":
                    profile_chains[pname] = Chain(chain_plugins)
                else:
                    profile_chains[pname] = Chain(
                        profile_chain(chain_plugins, own, profile_instances[pname])
                    )
        up = upstreams.get(r.upstream) if r.upstream else None
        chain = Chain(chain_plugins)
        rt = _route_runtime(cfg, r, chain, up)
        if r.split or r.versions or r.mirror or r.fallback:
            rt = _with_traffic(cfg, r, rt, upstreams)
        if r.aggregate is not None or profile_chains is not None:
            rt = dataclasses.replace(
                rt,
                aggregate=_aggregate(r, upstreams, cfg) if r.aggregate is not None else None,
                profile_chains=profile_chains,
            )
        routes.append(rt)
    s = cfg.server
    graph = RuntimeGraph(
        config=cfg,
        router=Router(cfg.routes),
        routes=routes,
        upstreams=upstreams,
        global_chain=global_chain,
        plugins=plugins,
        trusted=TrustedProxies(s.trusted_proxies),
        via=s.via.encode() if s.via else None,
        debug_token=s.debug_token.encode() if s.debug_token else None,
        config_hash=config_hash(cfg),
        observers=[as_observer(o) for o in observers or []],
        version=version,
    )
    if cfg.profiles:
        from portway.proxy.profiles import ProfileSelector

        graph.profiles = ProfileSelector(cfg.profiles)
    graph.shared_keys = frozenset(used)
    graph.owned_headers = _owned_headers(cfg)
    # (trusted proxies and a debug token make every request read some of its fields)
    graph.fields_unread = (
        not s.trusted_proxies
        and s.debug_token is None
        and not any(r.match.headers for r in cfg.routes)
        and not any(rt.chain.on_request or rt.chain.on_upstream_request for rt in routes)
    )
    tcfg = cfg.tracing.model_dump_json()
    if bctx.tracer is not None and bctx.tracer[0] == tcfg:
        graph.set_tracer(bctx.tracer[1])
    else:
        graph.set_tracer(build_tracer(cfg.tracing))
    return graph


def remember(bctx: BuildContext, graph: RuntimeGraph) -> None:
    """Record what a graph that went live uses, so the next build can reuse it."""
    cfg = graph.config
    bctx.upstreams = {
        n: (cfg.upstreams[n].model_dump_json(), u) for n, u in graph.upstreams.items()
    }


async def prune_shared(bctx: BuildContext, live: RuntimeGraph) -> None:
    """Close shared plugin objects the live graph no longer uses."""
    for k in list(bctx.shared):
        if k not in live.shared_keys:
            obj = bctx.shared.pop(k)
            close = getattr(obj, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    log.exception("closing shared object %s failed", k)
