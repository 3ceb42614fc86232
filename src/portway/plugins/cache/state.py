"""Per-request cache state and per-route counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum

from portway.pipeline.context import ContextKey
from portway.plugins.cache.directives import Directives
from portway.plugins.cache.entry import CacheEntry, VaryIndex
from portway.plugins.cache.policy import Assessment


class Mode(Enum):
    BYPASS = "bypass"
    INVALIDATE = "invalidate"
    MISS = "miss"
    VALIDATE = "validate"
    #: answered by the cache; response phases leave it alone
    DONE = "done"


@dataclass
class Counters:
    """Monotonic counters, metrics-ready via :meth:`snapshot`."""

    hit: int = 0
    miss: int = 0
    stale: int = 0
    bypass: int = 0
    revalidated: int = 0
    stored: int = 0
    not_storable: int = 0
    too_large: int = 0
    collapsed: int = 0
    invalidated: int = 0
    stale_if_error: int = 0
    background_refresh: int = 0
    refresh_failed: int = 0
    only_if_cached_miss: int = 0
    #: Range requests answered 206/416 from a stored complete response
    partial: int = 0
    #: stores refused because the URL was invalidated while the response was in flight
    store_raced: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(slots=True)
class Flight:
    """Per-request cache state, kept in ``ctx.state[CACHE_STATE]``."""

    mode: Mode
    key: str = ""
    rq: Directives = field(default_factory=Directives)
    entry: CacheEntry | None = None
    assessment: Assessment | None = None
    index: VaryIndex | None = None
    request_time: float = 0.0
    sent_validators: bool = False
    leader: asyncio.Future[bool] | None = None
    capture: list[bytes] | None = None
    captured: int = 0
    expected: int | None = None
    pending: CacheEntry | None = None
    resp_pairs: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: the key's invalidation version read before going upstream (None: not read yet) and
    #: when it was read (monotonic): what a store of this request's response is guarded by
    version: str | None = None
    version_at: float = 0.0


CACHE_STATE = ContextKey[Flight]("cache.flight")
