"""Process-wide registry of live cache plugin instances, for purges and metrics.

The admin API calls :func:`purge_all`, :func:`purge_key` and :func:`purge_route`; the
metrics exporter reads :func:`stats`. Instances register in ``start()`` and leave in
``aclose()``; several instances may share one store, and each store is purged once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portway.observability.sources import register_cache_stats

if TYPE_CHECKING:
    from portway.plugins.cache.plugin import CachePlugin
    from portway.plugins.cache.store import CacheStore


class CacheRegistry:
    """The set of running :class:`~portway.plugins.cache.plugin.CachePlugin` instances."""

    def __init__(self) -> None:
        self._plugins: list[CachePlugin] = []

    def register(self, plugin: CachePlugin) -> None:
        if not any(p is plugin for p in self._plugins):
            self._plugins.append(plugin)

    def unregister(self, plugin: CachePlugin) -> None:
        self._plugins = [p for p in self._plugins if p is not plugin]

    @property
    def plugins(self) -> list[CachePlugin]:
        return list(self._plugins)

    def _stores(self) -> list[CacheStore]:
        seen: dict[int, CacheStore] = {}
        for p in self._plugins:
            seen.setdefault(id(p.store), p.store)
        return list(seen.values())

    async def purge_all(self) -> int:
        """Drop every cached object; returns how many objects went (summed over stores)."""
        return sum([await s.clear() for s in self._stores()])

    async def purge_key(self, key: str) -> int:
        """Drop one primary key (as shown in ``X-Cache-Key``) and all its variants."""
        n = 0
        for s in self._stores():
            n += await s.invalidate(key)
            n += await s.delete_prefix(key + "#")
        return n

    async def purge_route(self, route: str) -> int:
        """Drop everything cached for one route (``"-"`` for requests without a route)."""
        return sum([await s.delete_prefix(route + "/") for s in self._stores()])

    async def purge_url(self, url: str, host: str | None = None) -> int:
        """Drop the stored response of ``url`` (absolute, or a path with ``host``) on every
        route whose key is built from the URL only; returns how many objects went."""
        n = 0
        for p in self._plugins:
            n += await p.purge_url(url, host)
        return n

    def stats(self) -> dict[str, Any]:
        """``{"routes": {route: counters}, "stores": [store stats]}``, metrics-ready."""
        routes: dict[str, dict[str, int]] = {}
        for p in self._plugins:
            agg = routes.setdefault(p.route_label, {})
            for k, v in p.counters.snapshot().items():
                agg[k] = agg.get(k, 0) + v
        return {"routes": routes, "stores": [s.stats() for s in self._stores()]}


registry = CacheRegistry()


async def purge_all() -> int:
    return await registry.purge_all()


async def purge_key(key: str) -> int:
    return await registry.purge_key(key)


async def purge_route(route: str) -> int:
    return await registry.purge_route(route)


def stats() -> dict[str, Any]:
    return registry.stats()


register_cache_stats(stats)  # read by the metrics endpoint at scrape time
