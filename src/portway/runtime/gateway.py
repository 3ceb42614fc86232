"""The running gateway in one process: current graph, reloads, lifecycle.

Reload = parse → validate → build a new graph (reusing unchanged upstreams and their pools) →
start its plugins and upstreams → swap the reference → drain and close what the old graph
alone used. A failure at any step leaves the old graph serving and is reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portway.config.schema import GatewayConfig
from portway.errors import GatewayError
from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.runtime.builder import BuildContext, build_graph, prune_shared, remember
from portway.runtime.graph import GraphSlot, RuntimeGraph

if TYPE_CHECKING:
    from portway.runtime.peers import PeerLog  # only with several workers (server/worker.py)

log = logging.getLogger("portway.runtime")


class ReloadError(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class Gateway:
    """Owns the live :class:`RuntimeGraph` of this process."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        config_path: str | Path | None = None,
        observers: list[Any] | None = None,
    ) -> None:
        self.config_path = Path(config_path) if config_path else None
        self._initial = config
        self._bctx = BuildContext()
        self._lock = asyncio.Lock()
        #: the serving graph; ``graph_ref()`` (a compiled callable) returns it per request
        self.graph_ref = GraphSlot()
        self._version = 0
        self.observers: list[Any] = list(observers or [])
        self.started = time.time()
        self.last_reload: dict[str, Any] = {"result": "none", "errors": [], "at": None}
        self.reload_listeners: list[Callable[[str], None]] = []
        #: with several workers: where a config applied through the admin API is written so
        #: sibling workers can load it, and the change log that tells them (``peers.PeerLog``)
        self.override_path: Path | None = None
        self.peers: PeerLog | None = None
        #: with ``state.sync_config``: publishes admin-applied configs to other instances
        self.cluster: Any = None

    @property
    def graph(self) -> RuntimeGraph:
        return self.graph_ref()

    @property
    def config(self) -> GatewayConfig:
        return self.graph.config

    async def start(self) -> None:
        g = await self._build(self._initial)
        await self._start_graph(g)
        self.graph_ref.current = g
        remember(self._bctx, g)

    async def _build(self, cfg: GatewayConfig) -> RuntimeGraph:
        self._version += 1
        return await build_graph(
            cfg,
            self._bctx,
            observers=self.observers,
            version=self._version,
            forward=self.subrequest,
        )

    async def _start_graph(self, g: RuntimeGraph) -> None:
        old = self.graph_ref.current
        old_ups = set(old.upstreams.values()) if old else set()
        for up in g.upstreams.values():
            if up not in old_ups:
                await up.start()
        for p in g.plugins:
            await p.start()
        if old is None or g.tracer is not old.tracer:
            await g.tracer.start()

    async def apply(self, cfg: GatewayConfig) -> RuntimeGraph:
        """Swap in ``cfg``; raises :class:`ReloadError` and keeps the old graph on failure."""
        async with self._lock:
            try:
                g = await self._build(cfg)
                await self._start_graph(g)
            except Exception as e:
                self._record("error", [f"{type(e).__name__}: {e}"])
                raise ReloadError([str(e)]) from e
            old = self.graph_ref.current
            self.graph_ref.current = g
            remember(self._bctx, g)
            self._record("ok", [])
            if old is not None:
                asyncio.get_running_loop().create_task(self._retire(old, g))
            return g

    async def reload_from_file(self) -> RuntimeGraph:
        from portway.config.loader import ConfigError, load_config

        if self.config_path is None and self.override_path is None:
            raise ReloadError(["no config file to reload from"])
        path = self._source_path()
        try:
            cfg = load_config(path)
        except ConfigError as e:
            errs = [str(i) for i in e.errors]
            self._record("error", errs)
            for line in errs:
                log.error("reload of %s rejected: %s", path, line)
            raise ReloadError(errs) from e
        g = await self.apply(cfg)
        log.info("config reloaded (version %d, %s)", g.version, g.config_hash)
        return g

    def _source_path(self) -> Path:
        """The config file, or the admin-applied override when that is newer."""
        o = self.override_path
        c = self.config_path
        if (
            o is not None
            and o.exists()
            and (c is None or not c.exists() or o.stat().st_mtime >= c.stat().st_mtime)
        ):
            return o
        assert c is not None
        return c

    async def publish(self, text: str | None) -> list[int]:
        """Share a config applied in this worker with its siblings (no-op with one worker)
        and, with ``state.sync_config``, with other instances; returns the ids of sibling
        workers that had not applied it in time (see :meth:`share`)."""
        if self.override_path is not None and text is not None:
            tmp = self.override_path.with_suffix(".tmp")
            await asyncio.to_thread(tmp.write_text, text)
            await asyncio.to_thread(tmp.replace, self.override_path)
        lagging = await self.share({"op": "reload"})
        if self.cluster is not None and text is not None:
            await self.cluster.publish(text)
        return lagging

    async def share(self, op: dict[str, Any]) -> list[int]:
        """Make a runtime change already applied here reach the sibling workers (waiting
        until they applied it) and, for drains and purges, the other instances."""
        lagging: list[int] = []
        if self.peers is not None:
            lagging = await self.peers.share(op)
        if self.cluster is not None and op.get("op") != "reload":
            await self.cluster.publish_op(op)
        return lagging

    def set_draining(self, upstream: str, target: str, draining: bool) -> bool | None:
        """Drain (or undrain) a target of the live graph; ``None`` if there is no such
        upstream, ``False`` if it has no such target."""
        up = self.graph.upstreams.get(upstream)
        if up is None:
            return None
        return bool(up.set_draining(target, draining))

    async def apply_shared(self, op: dict[str, Any]) -> None:
        """Apply a drain or purge published by a sibling worker or another instance (a
        reload is the worker's business: it logs and reports)."""
        kind = op.get("op")
        if kind == "drain":
            self.set_draining(str(op["upstream"]), str(op["target"]), bool(op["draining"]))
        elif kind == "purge":
            from portway.plugins.cache import registry

            if op.get("key") is not None:
                await registry.purge_key(str(op["key"]))
            elif op.get("route") is not None:
                await registry.purge_route(str(op["route"]))
            else:
                await registry.purge_all()

    def _record(self, result: str, errors: list[str]) -> None:
        self.last_reload = {"result": result, "errors": errors, "at": time.time()}
        for fn in self.reload_listeners:
            try:
                fn(result)
            except Exception:
                log.exception("reload listener failed")

    async def _retire(self, old: RuntimeGraph, new: RuntimeGraph, grace: float = 60.0) -> None:
        deadline = time.monotonic() + grace
        while old.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await _close_traffic(old)
        live_ups = set(new.upstreams.values())
        for up in old.upstreams.values():
            if up not in live_ups:
                await up.aclose()
                for t in up.targets:
                    _close_h2_pool(t)  # per Target object: never shared with the new graph
                    if t.pool is not None and not any(
                        t.pool is t2.pool for u in live_ups for t2 in u.targets
                    ):
                        t.pool.close()
        live_plugins = set(map(id, new.plugins))
        for p in old.plugins:
            if id(p) not in live_plugins:
                try:
                    await p.aclose()
                except Exception:
                    log.exception("closing plugin %s failed", p.name)
        await prune_shared(self._bctx, new)
        if old.tracer is not new.tracer:
            await old.tracer.aclose()

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight requests of the live graph (graceful shutdown)."""
        deadline = time.monotonic() + timeout
        while (g := self.graph_ref.current) is not None and g.inflight > 0:
            if time.monotonic() >= deadline:
                log.warning("shutdown timeout with %d requests in flight", g.inflight)
                return
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        g = self.graph_ref.current
        if g is None:
            return
        await _close_traffic(g)
        for up in g.upstreams.values():
            await up.aclose()
            for t in up.targets:
                _close_h2_pool(t)
                if t.pool is not None:
                    t.pool.close()
        for p in g.plugins:
            try:
                await p.aclose()
            except Exception:
                log.exception("closing plugin %s failed", p.name)
        await g.tracer.aclose()

    async def subrequest(self, ctx: RequestContext, request: Request) -> Response:
        """``PluginEnv.forward``: send ``request`` on ctx's route upstream, body buffered."""
        from portway.proxy.forward import Forwarder, prepare_upstream_request

        graph = self.graph
        m = ctx.match
        if m is None:
            raise GatewayError("subrequest without a route")
        rt = graph.routes[m.index] if m.index < len(graph.routes) else None
        if rt is None or rt.upstream is None:
            raise GatewayError("route has no upstream")
        sub = RequestContext(request, ctx.request_id)
        sub.match = m
        prepare_upstream_request(sub, rt, graph)
        fw = Forwarder(graph)
        resp = await fw.forward(sub, rt, None)
        try:
            body = resp.body if isinstance(resp.body, bytes) else await resp.body.read_all(64 << 20)
            Forwarder.finish_exchange(sub, ok=True)
        except BaseException:
            Forwarder.finish_exchange(sub, ok=False)
            raise
        return Response(resp.status, resp.headers, body, resp.reason, upstream=True)


async def _close_traffic(g: RuntimeGraph) -> None:
    """Cancel the mirrored copies a graph still has in flight (fire-and-forget: nobody waits
    on them)."""
    for rt in g.routes:
        if rt.traffic is not None:
            try:
                await rt.traffic.aclose()
            except Exception:
                log.exception("closing traffic rules of route %s failed", rt.config.name)


def _close_h2_pool(t: Any) -> None:
    """The target's HTTP/2 pool (``proxy/h2upstream.py`` keeps it in ``target.extra``)."""
    pool = t.extra.get("h2pool")
    if pool is not None:
        pool.close()
