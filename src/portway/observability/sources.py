"""Counters that other layers hand to the metrics endpoint, by registration.

Metrics never look their producers up (they sit below plugins and proxy in the layers,
docs/architecture.md "One request path", and a ``sys.modules`` lookup would hide the
dependency): a module with counters of its own registers a function returning them once,
when it loads, and the collector reads every registered source at scrape/flush time. A
producer that is not loaded registers nothing. Kinds:

- :data:`CACHE`: the cache plugin, ``{"routes": {route: {event: count}}}``;
- :data:`EJECTIONS`: ``{(upstream, reason): count}`` (``upstream/ejections.py``, registered by
  the runtime: ``upstream`` sits below this layer);
- :data:`EVENTS`: the publish plugin's ``{(sink, reason): count}`` (reason ``""``: sent);
- :data:`POOL_OVERFLOW`: ``{(upstream, target): count}`` (``proxy/overload.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

CACHE: Final = "cache"
EJECTIONS: Final = "ejections"
EVENTS: Final = "events"
POOL_OVERFLOW: Final = "pool_overflow"

Source = Callable[[], Mapping[Any, Any]]

#: kind → registered sources, in registration order
_SOURCES: dict[str, list[Source]] = {}


def register_counts(kind: str, source: Source) -> None:
    """Add ``source`` under ``kind`` (idempotent: a module reloaded registers the same
    function once)."""
    sources = _SOURCES.setdefault(kind, [])
    if source not in sources:
        sources.append(source)


def count_sources(kind: str) -> list[Source]:
    return list(_SOURCES.get(kind, ()))


def register_cache_stats(source: Callable[[], Mapping[str, Any]]) -> None:
    """The cache plugin's source (:data:`CACHE`)."""
    register_counts(CACHE, source)


def cache_stats_sources() -> list[Callable[[], Mapping[str, Any]]]:
    return count_sources(CACHE)
