"""Counters that plugins hand to the metrics endpoint, by registration.

A plugin with counters of its own (the cache's hits, misses, stores…) registers a function
returning ``{"routes": {route: {event: count}}}`` once when its module loads; the metrics
collector reads every registered source at scrape time. Metrics never look plugins up (they
sit below plugins in the layers, docs/architecture.md "One request path"), and a plugin that
is not loaded registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: registered cache-counter sources (``portway_cache_requests``), in registration order
_CACHE_SOURCES: list[Callable[[], Mapping[str, Any]]] = []


def register_cache_stats(source: Callable[[], Mapping[str, Any]]) -> None:
    """Add ``source`` (idempotent: a module reloaded registers the same function once)."""
    if source not in _CACHE_SOURCES:
        _CACHE_SOURCES.append(source)


def cache_stats_sources() -> list[Callable[[], Mapping[str, Any]]]:
    return list(_CACHE_SOURCES)
