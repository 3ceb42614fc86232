"""The ``cache`` plugin: an RFC 9111 shared cache in the request pipeline.

Per request, ``on_request`` looks the request up and either answers (fresh hit, acceptable
stale copy, 304 to a client conditional, 504 for ``only-if-cached``) or lets the request go
upstream, adding validators when a stored copy needs revalidation. ``on_response`` decides
whether the upstream's answer is stored, merges 304s into the stored copy, and swaps 5xx
answers for a stale copy when stale-if-error allows; ``on_response_chunk`` copies the body
as it streams to the client (never past ``max_object``). Unsafe methods that succeed
invalidate the URL and same-origin Location/Content-Location.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from portway.errors import GatewayError, UnavailableError, UpstreamError, UpstreamTimeoutError
from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.cache.answers import answer, merged_entry, range_answer
from portway.plugins.cache.config import CacheConfig
from portway.plugins.cache.entry import CacheEntry, VaryIndex
from portway.plugins.cache.hit import KeyMemo, hit_response, lookup_mem, wire_of
from portway.plugins.cache.hooks import CacheHooks, Probe, flight_of
from portway.plugins.cache.invalidation import targets, url_key
from portway.plugins.cache.keys import (
    KeyBuilder,
    UrlParts,
    request_url,
    variant_key,
)
from portway.plugins.cache.memory import MemoryStore
from portway.plugins.cache.policy import (
    CONDITIONAL_FIELDS,
    ERROR_STATUSES,
    NO_DIRECTIVES,
    REQUEST_FIELDS,
    SAFE_METHODS,
    Pairs,
    Reuse,
    Windows,
    assess,
    first,
    fresh_age,
    has_conditionals,
    request_directives,
    reuse,
    stale_if_error_ok,
    storable,
    stored_headers,
    validator_matches,
    validators,
    values,
)
from portway.plugins.cache.redis_store import RedisStore
from portway.plugins.cache.refresh import Refresher
from portway.plugins.cache.registry import registry
from portway.plugins.cache.state import CACHE_STATE, Counters, Flight, Mode
from portway.plugins.cache.store import GUARD_MAX_AGE, CacheStore, Guard
from portway.plugins.cache.storing import store_guarded
from portway.plugins.cache.tiered import TieredStore
from portway.state.connect import state_redis_url

log = logging.getLogger("portway.cache")


#: exceptions that mean "the upstream failed" (stale-if-error applies), as opposed to errors
#: raised by other plugins: connect failures, resets, protocol errors mid-head and timeouts
#: all arrive as these (``proxy/forward.py:classify_failure``)
_UPSTREAM_FAILURES = (
    UpstreamError,
    UpstreamTimeoutError,
    UnavailableError,
    OSError,
    asyncio.TimeoutError,
)


class CachePlugin(Plugin[CacheConfig]):
    """RFC 9111 shared cache (see the module docstring for the per-request flow).

    Long-lived state: the store (shared across reloads through ``env.shared``, keyed by the
    settings that shape it), counters per route, and the in-flight map that collapses
    concurrent misses for one key into a single upstream fetch. Registers itself in
    :data:`portway.plugins.cache.registry.registry` between ``start()`` and ``aclose()``.
    """

    name: ClassVar[str] = "cache"
    stage: ClassVar[Stage] = Stage.traffic
    Config: ClassVar[type[CacheConfig]] = CacheConfig
    observes_response_chunks: ClassVar[bool] = True
    #: on its own answers (and the 504 of only-if-cached) its response hooks do nothing
    #: (``Mode.DONE``; answers are never upstream responses), and ``on_log`` still settles
    skip_own_answer: ClassVar[bool] = True
    #: ``on_request`` edits ``ctx.upstream_request`` only to add validators, on a copy it
    #: makes then (``_go_upstream``): a hit never copies the request
    copies_on_edit: ClassVar[bool] = True

    def __init__(self, config: CacheConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        c = config
        settings = env.settings
        state = getattr(settings, "state", None)
        self._redis_url: str = c.redis_url or state_redis_url(state)
        self._redis_prefix: str = c.redis_prefix or (
            str(getattr(state, "key_prefix", "portway:")) + "cache:"
        )
        shape = (
            c.store,
            c.max_memory,
            c.max_object,
            self._redis_url if c.store != "memory" else "",
            self._redis_prefix if c.store != "memory" else "",
            c.redis_timeout,
            c.memory_front_max_ttl,
        )
        fp = hashlib.sha256(repr(shape).encode()).hexdigest()[:16]
        self.store: CacheStore = env.shared(f"cache.store:{fp}", self._make_store)
        self.route_label = env.route or "*"
        self.counters: Counters = env.shared(f"cache.counters:{self.route_label}", Counters)
        self.keys = KeyBuilder(c.key)
        #: RFC 9213 target list, and the targeted fields never sent to clients
        self.targets: tuple[bytes, ...] = tuple(
            n.lower().encode("latin-1") for n in c.targeted_cache_control
        )
        self.strip_fields: tuple[bytes, ...] = tuple(
            n.lower().encode("latin-1") for n in c.strip_targeted_cache_control
        )
        self.windows = Windows(
            swr=c.stale_while_revalidate,
            sie=c.stale_if_error,
            heuristic=c.heuristic,
            heuristic_max=c.heuristic_max,
            default_ttl=c.default_ttl,
            targets=self.targets,
        )
        self._hooks: CacheHooks | None = None
        #: wall-clock seconds; replaceable in tests
        self.clock = time.time
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        self.refresher = Refresher(self)
        #: the in-memory store, read without a coroutine: its hooks never suspend (but for
        #: a miss collapsed behind another, which the task finishes), so the request phase
        #: runs task-free and a hit is written there (proxy/fast.py); Redis-backed stores
        #: (redis, tiered) await their lookups and stay on the general path
        store = self.store
        self._mem: MemoryStore | None = store if isinstance(store, MemoryStore) else None
        self.sync_hooks = self._mem is not None
        self._memo = KeyMemo()
        self._url_only = self.keys.url_only
        #: the common hit, compiled (``hooks.py``); ``on_request`` tries it first on every
        #: path, and the task-free runner calls it as ``fast_hooks`` without a coroutine
        self.fast_hooks: CacheHooks | None = None
        if self._mem is not None:
            self._hooks = CacheHooks(
                self._mem,
                self._memo,
                self.keys,
                env.route or "",
                SAFE_METHODS & frozenset(c.methods),
                self.windows,
                self.strip_fields,
                c.expose_key,
                self.counters,
                self.clock,
                self._request,
                self.on_response,
                self._on_log,
            )
            # a subclass may change what the hooks reproduce: it keeps the coroutine hooks
            if type(self) is CachePlugin:
                self.fast_hooks = self._hooks
                # the instance's ``on_log`` is the compiled one (the class still implements
                # the phase; the runner finds this bound method first): a plain hit then
                # costs the log phase no interpreted call
                self.on_log = self._hooks.log  # type: ignore[method-assign]

    def _make_store(self) -> CacheStore:
        c = self.config
        if c.store == "memory":
            return MemoryStore(c.max_memory, c.max_object)
        back = RedisStore(
            self._redis_url, self._redis_prefix, timeout=c.redis_timeout, max_object=c.max_object
        )
        if c.store == "redis":
            return back
        return TieredStore(
            MemoryStore(c.max_memory, c.max_object), back, front_ttl=c.memory_front_max_ttl
        )

    async def start(self) -> None:
        await self.store.start()
        registry.register(self)

    async def aclose(self) -> None:
        registry.unregister(self)
        await self.refresher.aclose()
        for fut in self._inflight.values():
            if not fut.done():
                fut.set_result(False)
        self._inflight.clear()

    def stats(self) -> dict[str, Any]:
        return {"route": self.route_label, **self.counters.snapshot(), **self.store.stats()}

    # --- request phase -------------------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        """Wall-clock seconds (``time.time``); replaceable in tests (the hooks follow)."""
        return self._clock

    @clock.setter
    def clock(self, fn: Callable[[], float]) -> None:
        self._clock = fn
        if self._hooks is not None:
            self._hooks.clock = fn

    async def on_request(self, ctx: RequestContext) -> Response | None:
        hooks = self._hooks
        probe: Probe | None = None
        if hooks is not None:
            got = hooks.probe(ctx)
            if isinstance(got, Response):
                return got
            probe = got
        return await self._request(ctx, probe)

    async def _request(self, ctx: RequestContext, probe: Probe | None = None) -> Response | None:
        """``on_request`` for everything but the plain fresh hit of ``CacheHooks.hit`` (it
        answers that one too, for the keys the hooks do not memoise). ``probe``: what the
        hooks already looked up for this request (the memory store's key, entry and Vary
        index), not looked up again."""
        req = ctx.request
        if req.method not in SAFE_METHODS:
            ctx.state[CACHE_STATE] = Flight(Mode.INVALIDATE)
            return None
        pairs = req.headers.raw()
        if req.method not in self.config.methods:
            ctx.state[CACHE_STATE] = Flight(Mode.BYPASS)
            self.counters.bypass += 1
            return None
        # one look at the field names: the common request has none of these
        plain = True
        for k, _ in pairs:
            if k in REQUEST_FIELDS:
                plain = False
                break
        mem = self._mem
        entry: CacheEntry | None = None
        index: VaryIndex | None = None
        if probe is not None:
            # the hooks probed it (a plain request of a cached method, keyed as here, on
            # the memory store): their lookup stands
            key, entry, index = probe.key, probe.entry, probe.index
        else:
            key = self._request_key(ctx, req)
            if mem is not None:
                entry, index = lookup_mem(mem, self._memo, key, pairs)
        if mem is not None and entry is not None and plain:
            # the common hit (fresh; no directives, conditionals or range asked for):
            # nothing for the later phases to do, so no per-request state either
            age = fresh_age(entry, self.clock(), self.windows)
            wire = wire_of(entry, self.strip_fields) if age is not None else None
            if age is not None and wire is not None:
                self.counters.hit += 1
                return hit_response(
                    entry, wire, age, b"HIT", key if self.config.expose_key else None
                )
        # RFC 9110 §14.2: only GET has range semantics; a HEAD's Range is ignored
        ranges = values(pairs, b"range") if not plain and req.method == "GET" else []
        rq = NO_DIRECTIVES if plain else request_directives(pairs)
        flight = Flight(Mode.MISS, key=key, rq=rq)
        ctx.state[CACHE_STATE] = flight
        if mem is not None:
            flight.index = index
            flight.version, flight.version_at = mem.version_nowait(key), time.monotonic()
        else:
            entry, flight.index = await self._lookup(flight, pairs)
        if entry is not None:
            a = assess(entry, self.clock(), self.windows)
            flight.entry, flight.assessment = entry, a
            decision = reuse(a, rq)
            label = ""
            if decision is Reuse.FRESH:
                self.counters.hit += 1
                label = "HIT"
            elif decision is Reuse.STALE_OK or (
                decision is Reuse.STALE_REFRESH and self.refresher.start(ctx, flight)
            ):
                self.counters.stale += 1
                label = "STALE"
            if label:
                if ranges:
                    return self._answer_range(ctx, flight, entry, a.age, label, ranges)
                return self._answer(ctx, flight, entry, a.age, label)
        if ranges:
            # not answerable from the cache: the origin answers the range, nothing is stored
            flight.mode = Mode.BYPASS
            self.counters.bypass += 1
            return None
        if rq.has("only-if-cached"):
            self.counters.only_if_cached_miss += 1
            flight.mode = Mode.DONE
            raise GatewayError(
                "no stored response satisfies only-if-cached", status=504, code="not_cached"
            )
        return await self._go_upstream(ctx, flight)

    def _key(self, ctx: RequestContext, url: UrlParts) -> str:
        consumer = ctx.consumer.id if ctx.consumer is not None else None
        return self.keys.primary(
            self.env.route or ctx.route_name or "-", url, ctx.request, consumer
        )

    def _request_key(self, ctx: RequestContext, req: Request) -> str:
        """:meth:`_key` of the request's own URL, memoised when the URL alone makes it."""
        if not self._url_only:
            return self._key(ctx, request_url(req))
        return self._memo.request_key(self.keys, self.env.route or ctx.route_name or "-", req)

    async def _lookup(
        self, flight: Flight, pairs: Pairs
    ) -> tuple[CacheEntry | None, VaryIndex | None]:
        """The stored response for this request (and the Vary index it came through); also
        records the key's invalidation version on ``flight`` (see ``store.py``)."""
        key = flight.key
        obj, version = await self.store.lookup(key)
        if version is not None:
            flight.version, flight.version_at = version, time.monotonic()
        if obj is None or isinstance(obj, CacheEntry):
            return obj, None
        found = await self.store.get(variant_key(key, obj.gen, obj.names, pairs))
        return (found if isinstance(found, CacheEntry) else None), obj

    async def _read_version(self, flight: Flight) -> None:
        # before the request goes upstream: an invalidation after this point must win
        if flight.version is None:
            flight.version = await self.store.version(flight.key)
            flight.version_at = time.monotonic()

    @staticmethod
    def guard(flight: Flight) -> Guard | None:
        """What stores of this request's response are checked against; ``None`` when the
        version is unknown or too old to prove that no invalidation came in between."""
        if flight.version is None or time.monotonic() - flight.version_at > GUARD_MAX_AGE:
            return None
        return Guard(flight.key, flight.version)

    async def _go_upstream(self, ctx: RequestContext, flight: Flight) -> Response | None:
        req = ctx.request
        pairs = req.headers.raw()
        rq = flight.rq
        collapsible = (
            self.config.collapse
            and req.method == "GET"
            and not has_conditionals(pairs)
            and not rq.has("no-cache")
            and not rq.has("no-store")
        )
        if collapsible:
            fut = self._inflight.get(flight.key)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self._inflight[flight.key] = fut
                flight.leader = fut
            else:
                self.counters.collapsed += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), self.config.collapse_timeout)
                entry, index = await self._lookup(flight, pairs)
                if entry is not None:
                    a = assess(entry, self.clock(), self.windows)
                    if reuse(a, rq) in (Reuse.FRESH, Reuse.STALE_OK):
                        self.counters.hit += 1
                        return self._answer(ctx, flight, entry, a.age, "HIT")
                    flight.entry, flight.assessment, flight.index = entry, a, index
        if flight.entry is not None:
            flight.mode = Mode.VALIDATE
            vals = validators(flight.entry)
            if vals:
                if ctx.upstream_request is req:
                    # a runner that shares the client's request until a hook edits it
                    # (``RequestContext(copy=False)``): edit a copy, never the request
                    ctx.upstream_request = req.copy_for_upstream()
                up = ctx.upstream_request.headers
                up.remove_many(CONDITIONAL_FIELDS)
                for name, value in vals:
                    up.add(name, value)
                flight.sent_validators = True
        else:
            flight.mode = Mode.MISS
        await self._read_version(flight)
        flight.request_time = self.clock()
        return None

    def _answer(
        self, ctx: RequestContext, flight: Flight, entry: CacheEntry, age: float, label: str
    ) -> Response:
        """A response built from ``entry``: 304 when the client's conditionals match."""
        flight.mode = Mode.DONE
        self._settle(flight, False)
        key = flight.key if self.config.expose_key else None
        pairs = ctx.request.headers.raw()
        if not has_conditionals(pairs):
            wire = wire_of(entry, self.strip_fields)
            if wire is not None:
                return hit_response(entry, wire, age, label.encode(), key)
        return answer(entry, age, label, pairs, self.strip_fields, key)

    def _answer_range(
        self,
        ctx: RequestContext,
        flight: Flight,
        entry: CacheEntry,
        age: float,
        label: str,
        ranges: list[str],
    ) -> Response:
        """A Range request answered from a stored complete response (see ``answers.py``)."""
        key = flight.key if self.config.expose_key else None
        pairs = ctx.request.headers.raw()
        resp = range_answer(entry, age, label, pairs, ranges, self.strip_fields, key)
        if resp is None:
            return self._answer(ctx, flight, entry, age, label)
        flight.mode = Mode.DONE
        self._settle(flight, False)
        self.counters.partial += 1
        return resp

    # --- response phases -------------------------------------------------------------------

    async def on_response(self, ctx: RequestContext) -> None:
        try:
            await self._on_response(ctx)
        finally:
            resp = ctx.response
            if self.strip_fields and resp is not None and resp.upstream:
                # fields that address this cache alone (RFC 9213 §3: a cache MAY remove a
                # targeted field that is of no use downstream); stored copies keep them
                resp.headers.remove_many(self.strip_fields)

    async def _on_response(self, ctx: RequestContext) -> None:
        flight = ctx.state.get(CACHE_STATE)
        resp = ctx.response
        if flight is None or resp is None or flight.mode is Mode.DONE:
            return
        if flight.mode is Mode.INVALIDATE:
            if 200 <= resp.status < 400:
                await self._invalidate(ctx, resp)
            return
        if flight.mode is Mode.BYPASS:
            resp.headers.set("x-cache", "BYPASS")
            return
        if not resp.upstream:
            self._settle(flight, False)
            return
        if resp.status in ERROR_STATUSES:
            stale = self._stale_for_error(ctx, flight)
            if stale is not None:
                ctx.response = stale
                return
        if (
            resp.status == 304
            and flight.sent_validators
            and flight.entry is not None
            and validator_matches(flight.entry, resp.headers.raw())
        ):
            await self._freshen(ctx, flight, resp)
            return
        self._consider_storing(ctx, flight, resp)
        if flight.pending is not None and flight.capture is None:
            await self._finish_capture(ctx, flight)

    def _consider_storing(self, ctx: RequestContext, flight: Flight, resp: Response) -> None:
        req = ctx.request
        rpairs = resp.headers.raw()
        self.counters.miss += 1
        ok, _why = storable(
            req.method,
            resp.status,
            rpairs,
            req.headers.raw(),
            store_set_cookie=self.config.store_set_cookie,
            targets=self.targets,
        )
        expected: int | None = None
        cl = first(rpairs, b"content-length")
        if cl is not None and cl.strip().isdigit():
            expected = int(cl.strip())
        if ok and expected is not None and expected > self.config.max_object:
            ok = False
            self.counters.too_large += 1
        if ok:
            now = self.clock()
            flight.pending = CacheEntry(
                status=resp.status,
                headers=stored_headers(rpairs, response_time=now, targets=self.targets),
                body=b"",
                request_time=flight.request_time or now,
                response_time=now,
                expires_at=0.0,
            )
            flight.resp_pairs = list(rpairs)
            flight.expected = expected
            if isinstance(resp.body, bytes):
                flight.pending.body = resp.body
            elif expected != 0 and resp.status not in (204,):
                flight.capture = []
        else:
            self.counters.not_storable += 1
            self._settle(flight, False)
        resp.headers.set("x-cache", "MISS")
        if self.config.expose_key:
            resp.headers.set("x-cache-key", flight.key)

    async def on_response_chunk(self, ctx: RequestContext, chunk: bytes, end: bool) -> bytes:
        flight = ctx.state.get(CACHE_STATE)
        if flight is None or flight.capture is None:
            return chunk
        if chunk:
            flight.captured += len(chunk)
            if flight.captured > self.config.max_object:
                flight.capture = None
                flight.pending = None
                self.counters.too_large += 1
                self._settle(flight, False)
                return chunk
            flight.capture.append(bytes(chunk))
            if flight.captured == flight.expected:
                # the last byte of a Content-Length body: store before the handler sends it,
                # so a client that has the whole response finds it stored (read-your-writes)
                end = True
        if end:
            parts, flight.capture = flight.capture, None
            if flight.pending is not None:
                flight.pending.body = b"".join(parts)
                await self._finish_capture(ctx, flight)
        return chunk

    async def _finish_capture(self, ctx: RequestContext, flight: Flight) -> None:
        entry, flight.pending = flight.pending, None
        if entry is None:
            return
        if flight.expected is not None and len(entry.body) != flight.expected:
            self._settle(flight, False)
            return
        stored = await self._store(flight, ctx.request.headers.raw(), entry)
        self._settle(flight, stored)

    async def on_error(self, ctx: RequestContext, exc: BaseException) -> Response | None:
        flight = ctx.state.get(CACHE_STATE)
        if flight is None:
            return None
        flight.capture = None
        flight.pending = None
        self._settle(flight, False)
        if flight.mode in (Mode.MISS, Mode.VALIDATE) and isinstance(exc, _UPSTREAM_FAILURES):
            return self._stale_for_error(ctx, flight)
        return None

    def on_log(self, ctx: RequestContext) -> None:
        self._on_log(ctx)

    def _on_log(self, ctx: RequestContext) -> None:
        flight = flight_of(ctx)
        if flight is not None:
            flight.capture = None
            self._settle(flight, False)

    # --- helpers -------------------------------------------------------------------------

    def _settle(self, flight: Flight, stored: bool) -> None:
        """Release the requests collapsed behind this one (they re-check the store)."""
        fut = flight.leader
        if fut is None:
            return
        flight.leader = None
        if self._inflight.get(flight.key) is fut:
            del self._inflight[flight.key]
        if not fut.done():
            fut.set_result(stored)

    def _stale_for_error(self, ctx: RequestContext, flight: Flight) -> Response | None:
        entry = flight.entry
        if entry is None or self.config.stale_if_error is False:
            return None
        a = assess(entry, self.clock(), self.windows)
        if not stale_if_error_ok(a, flight.rq):
            return None
        self._settle(flight, False)
        self.counters.stale_if_error += 1
        return self._answer(ctx, flight, entry, a.age, "STALE")

    async def _store(self, flight: Flight, req_pairs: Pairs, entry: CacheEntry) -> bool:
        guard = self.guard(flight)
        if guard is None:
            self.counters.store_raced += 1
            return False
        return await self.store_guarded(flight.key, flight.index, req_pairs, entry, guard)

    async def store_guarded(
        self,
        key: str,
        index: VaryIndex | None,
        req_pairs: Pairs,
        entry: CacheEntry,
        guard: Guard,
    ) -> bool:
        """Store ``entry`` and its Vary index, refused once ``guard`` is stale (see
        ``storing.store_guarded``)."""
        return await store_guarded(self, key, index, req_pairs, entry, guard)

    async def _freshen(self, ctx: RequestContext, flight: Flight, resp: Response) -> None:
        """Merge a 304 into the stored response, store it, and answer from it."""
        entry = flight.entry
        assert entry is not None
        updated = self.merged(entry, resp.headers.raw(), flight.request_time)
        ok, _ = storable(
            "GET",
            updated.status,
            updated.headers,
            ctx.request.headers.raw(),
            store_set_cookie=self.config.store_set_cookie,
            targets=self.targets,
        )
        stored = False
        if ok:
            stored = await self._store(flight, ctx.request.headers.raw(), updated)
        self._settle(flight, stored)
        self.counters.revalidated += 1
        a = assess(updated, self.clock(), self.windows)
        answer = self._answer(ctx, flight, updated, a.age, "REVALIDATED")
        # fields the 304 carried but we do not store (e.g. Set-Cookie) still reach this client
        if not self.config.store_set_cookie:
            for v in resp.headers.get_all("set-cookie"):
                answer.headers.add("set-cookie", v)
        ctx.response = answer

    def merged(self, entry: CacheEntry, resp304: Pairs, request_time: float) -> CacheEntry:
        return merged_entry(
            entry,
            resp304,
            request_time,
            self.clock(),
            store_set_cookie=self.config.store_set_cookie,
            targets=self.targets,
        )

    async def _invalidate(self, ctx: RequestContext, resp: Response) -> None:
        """RFC 9111 §4.4: a successful unsafe request invalidates its URL and same-origin
        Location / Content-Location (``invalidation.targets``)."""
        n = await self.store.invalidate(*targets(ctx, resp, self._key))
        self.counters.invalidated += n

    async def purge_url(self, url: str, host: str | None = None) -> int:
        """Drop the stored response for ``url`` on this plugin's route (admin helper)."""
        key = url_key(self.keys, self.env.route, url, host)
        return 0 if key is None else await self.store.invalidate(key)
