"""The cache's per-request work on the memory store, as :class:`SyncHooks` (compiled with
mypyc, setup.py ``HOT_MODULES``).

:meth:`CacheHooks.hit` answers the common hit without a coroutine: a request whose method
the cache answers, with none of the fields that change the answer (``REQUEST_FIELDS``:
Cache-Control, Pragma, conditionals, Range), a key built from the URL alone (memoised), one
dict get per stored object (two through a Vary index), the freshness check on the entry's
precomputed metadata, then the answer with the entry's prebuilt head (``hit.hit_response``).
Everything else — misses, stale copies, conditionals, Range, request directives, keys that
name other request parts, a head that would not read back the same — returns ``None`` and
the plugin's full ``on_request`` (interpreted) decides, from the start: ``hit`` changes
nothing it declines (the store lookup it made only refreshes the LRU order, as the full
lookup's does again). ``request``/``response`` are the plugin's hooks for the task-free
runner: the full hooks are driven as coroutines there (``runner.drive``: one that suspends
is handed to the task), so both paths run one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import SyncHooks, drive
from portway.plugins.cache.entry import CacheEntry, VaryIndex
from portway.plugins.cache.hit import KeyMemo, Wire, hit_response, lookup_mem, wire_of
from portway.plugins.cache.keys import KeyBuilder
from portway.plugins.cache.memory import MemoryStore
from portway.plugins.cache.policy import REQUEST_FIELDS, Windows, _Meta, fresh_age
from portway.plugins.cache.state import CACHE_STATE, Counters, Flight


class Probe:
    """What :meth:`CacheHooks.probe` looked up before declining (a miss, a stale or
    uncached-looking entry): the full hook carries on from it instead of looking up again."""

    __slots__ = ("entry", "index", "key")

    def __init__(self, key: str, entry: CacheEntry | None, index: VaryIndex | None) -> None:
        self.key = key
        self.entry = entry
        self.index = index


RequestHook = Callable[[RequestContext, "Probe | None"], Coroutine[Any, Any, Response | None]]
ResponseHook = Callable[[RequestContext], Coroutine[Any, Any, None]]
LogHook = Callable[[RequestContext], None]


def flight_of(ctx: RequestContext) -> Flight | None:
    """The request's cache state, without creating ``ctx.state`` when there is none (a
    plain hit leaves none)."""
    st = ctx._state
    return None if st is None else st.get(CACHE_STATE)


class CacheHooks(SyncHooks):
    """The cache plugin's hooks on a memory store (see the module docstring)."""

    def __init__(
        self,
        mem: MemoryStore,
        memo: KeyMemo,
        keys: KeyBuilder,
        route: str,
        methods: frozenset[str],
        windows: Windows,
        strip: tuple[bytes, ...],
        expose_key: bool,
        counters: Counters,
        clock: Callable[[], float],
        full_request: RequestHook,
        full_response: ResponseHook,
        full_log: LogHook,
    ) -> None:
        self.mem = mem
        self.memo = memo
        self.keys = keys
        #: the plugin's own route ("" for a global binding: the request's route then)
        self.route = route
        #: the safe methods the cache answers (others are never a hit)
        self.methods = methods
        #: keys are made of the URL alone, so they are memoised (else no hit is taken here)
        self.url_only = keys.url_only
        self.windows = windows
        self.strip = strip
        self.expose_key = expose_key
        self.counters = counters
        #: the plugin's wall clock (its ``clock`` property keeps this in step)
        self.clock = clock
        self.full_request = full_request
        self.full_response = full_response
        self.full_log = full_log

    def hit(self, ctx: RequestContext) -> Response | None:
        """The answer to a plain fresh hit, or ``None`` (nothing changed: the full hook
        decides)."""
        got = self.probe(ctx)
        return got if isinstance(got, Response) else None

    def probe(self, ctx: RequestContext, lines: bool = False) -> Response | Probe | None:
        """:meth:`hit`, and when it declines after looking the request up (a miss, most
        often), what it found: the full hook's lookup is then not made twice (a lookup
        changes nothing but the LRU order, which the full one would refresh the same way).
        ``None``: declined before any lookup. ``lines``: the answer is for the task-free
        writer (``hit.hit_response``)."""
        req = ctx.request
        if not self.url_only or req.method not in self.methods:
            return None
        pairs = req.headers.raw()
        fields = REQUEST_FIELDS
        for k, _ in pairs:
            if k in fields:
                return None
        route = self.route
        if not route:
            route = ctx.route_name or "-"
        memo = self.memo
        key = memo.request_key(self.keys, route, req)
        entry, index = lookup_mem(self.mem, memo, key, pairs)
        if entry is None:
            return Probe(key, None, index)
        now = self.clock()
        windows = self.windows
        strip = self.strip
        w = entry.wire
        age: float | None
        wire: Wire
        if isinstance(w, Wire) and w.windows is windows and w.strip == strip:
            # policy.fresh_age on the data kept on the entry's wire (same arithmetic)
            if w.no_cache:
                return Probe(key, entry, index)
            age = w.initial_age + max(0.0, now - w.response_time)
            if not w.lifetime > age:
                return Probe(key, entry, index)
            wire = w
        else:
            age = fresh_age(entry, now, windows)
            if age is None:
                return Probe(key, entry, index)
            built = wire_of(entry, strip)
            if built is None:
                return Probe(key, entry, index)
            wire = built
            m = entry.meta
            if isinstance(m, _Meta):  # (fresh_age just computed it for ``windows``)
                wire.note(windows, m.no_cache, m.initial_age, m.lifetime)
        self.counters.hit += 1
        return hit_response(None, wire, age, b"HIT", key if self.expose_key else None, lines)

    def request(self, ctx: RequestContext) -> Response | None:
        # (the task-free runner's entry: the answer is written from its raw lines there)
        got = self.probe(ctx, True)
        if isinstance(got, Response):
            return got
        return drive(self.full_request(ctx, got))

    def response(self, ctx: RequestContext) -> None:
        if flight_of(ctx) is None:
            # no per-request state (the cache answered a plain hit, or never ran): the full
            # hook's only work is dropping targeted fields from an upstream's response
            resp = ctx.response
            if self.strip and resp is not None and resp.upstream:
                resp.headers.remove_many(self.strip)
            return
        drive(self.full_response(ctx))

    def log(self, ctx: RequestContext) -> None:
        """The plugin's ``on_log`` (bound in its place on the instance: the runner's call
        is then a compiled one): nothing to settle without per-request state (a plain hit,
        a request the cache never ran for)."""
        if ctx._state is not None:
            self.full_log(ctx)
