"""Gateway metrics in the Prometheus exposition format.

The hot path (:meth:`Metrics.on_request_done`) touches only plain Python ints and floats held
per ``(route, upstream)`` pair: one dict lookup, a few list increments and a ``bisect`` for the
histogram bucket. prometheus-client objects are built only at scrape time by a custom collector
(:class:`~portway.observability.exposition.GatewayCollector`, in ``exposition.py`` with the
rest of the scrape-time code, whose public names this module re-exports), which is what
keeps the per-request cost around a microsecond (``bench/metrics_bench.py``);
prometheus-client's own labelled children take a lock and, in multiprocess mode, write to an
mmap on every increment.

Across worker processes (``--workers``) every worker periodically writes its cumulative
counters to ``<dir>/portway-<pid>-<token>.json`` (``dir`` is ``$PROMETHEUS_MULTIPROC_DIR``, set
by the supervisor, which empties it at start). A scrape served by any process merges its live
values with the files of the other workers: counters and histograms are summed over every file
(so totals survive a worker restart), gauges only over workers that are still alive. Values
from other workers are at most ``flush_interval`` seconds old. Metrics that other code registers
with prometheus-client directly are exposed too (through its ``MultiProcessCollector`` when the
directory is set, else the default registry).

Label values are bounded: route and upstream names come from the config, ``method`` is one of
the standard methods or ``OTHER``, ``status_class`` is ``1xx``…``5xx``, ``none`` (no response:
the client went away) or ``other``. Raw paths and consumer ids never become labels.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

import orjson

from portway.digest import token_hex
from portway.observability.exposition import CIRCUIT_STATES as CIRCUIT_STATES
from portway.observability.exposition import (
    GatewayCollector,
    _cache_plugin_counts,
    _Chain,
    _ejection_counts,
    _event_counts,
    _MultiProcess,
    _overflow_counts,
    _pid_alive,
)
from portway.observability.exposition import breaker_name as breaker_name
from portway.observability.exposition import breaker_state_value as breaker_state_value
from portway.observability.exposition import target_snapshot as target_snapshot
from portway.observability.observer import Observer
from portway.tasks import stop_task

if TYPE_CHECKING:
    from portway.pipeline.context import RequestContext

log: Final = logging.getLogger("portway.metrics")

KNOWN_METHODS: Final[tuple[str, ...]] = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "TRACE",
    "CONNECT",
)
METHOD_LABELS: Final[tuple[str, ...]] = (*KNOWN_METHODS, "OTHER")
STATUS_CLASSES: Final[tuple[str, ...]] = ("none", "1xx", "2xx", "3xx", "4xx", "5xx", "other")
_NC: Final = len(STATUS_CLASSES)
#: method → index of its first slot in the flat ``requests`` list (method-major)
_METHOD_BASE: Final[dict[str, int]] = {m: i * _NC for i, m in enumerate(KNOWN_METHODS)}
_OTHER_BASE: Final = len(KNOWN_METHODS) * _NC
#: GET's first slot, tested before the dict (most requests)
_GET_BASE: Final = KNOWN_METHODS.index("GET") * _NC
_N_REQ: Final = len(METHOD_LABELS) * _NC

#: seconds; tuned for a gateway: sub-millisecond local answers up to slow upstreams
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
CACHE_RESULTS: Final[frozenset[str]] = frozenset({"hit", "miss", "bypass", "stale", "expired"})


#: label values of ``portway_route_path_requests_total``, by ``RequestContext.served``
PATH_LABELS: Final[tuple[str, ...]] = ("general", "fast", "fallback")


class _Series:
    """Cumulative values of one (route, upstream) pair; histogram buckets are not cumulative.

    The four per-request counters (request by method and class, duration bucket, upstream
    latency bucket, serving path) are folded lazily: consecutive requests with the same
    four indexes (most of a steady stream: same method, class and buckets) only count up
    ``run_n``, a native int; the lists get the run when the indexes change or when read
    (:meth:`fold`, called by :meth:`dump`). Four boxed list increments per request were
    ~40 % of the observer. Readers of the lists go through :meth:`dump` (snapshots)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "dur",
        "dur_sum",
        "paths",
        "requests",
        "run_dur",
        "run_n",
        "run_path",
        "run_req",
        "run_up",
        "up",
        "up_sum",
    )

    def __init__(self, nb: int) -> None:
        self.requests = [0] * _N_REQ
        self.dur = [0] * (nb + 1)
        self.dur_sum = 0.0
        self.up = [0] * (nb + 1)
        self.up_sum = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        #: requests per serving path (general, task-free, fallback: ``ctx.served``)
        self.paths = [0, 0, 0]
        #: the run not yet in the lists: ``run_n`` requests at these indexes (``run_up``
        #: -1: no upstream latency)
        self.run_n = 0
        self.run_req = -1
        self.run_dur = -1
        self.run_up = -1
        self.run_path = -1

    def count(self, req: int, dur: int, up: int, path: int) -> None:
        """One request at these indexes (``up`` -1: none)."""
        if (
            req == self.run_req
            and dur == self.run_dur
            and up == self.run_up
            and path == self.run_path
        ):
            self.run_n += 1
            return
        self.fold()
        self.run_req = req
        self.run_dur = dur
        self.run_up = up
        self.run_path = path
        self.run_n = 1

    def fold(self) -> None:
        """Add the pending run to the lists."""
        n = self.run_n
        if n:
            self.run_n = 0
            self.requests[self.run_req] += n
            self.dur[self.run_dur] += n
            if self.run_up >= 0:
                self.up[self.run_up] += n
            self.paths[self.run_path] += n

    def dump(self) -> list[Any]:
        self.fold()
        return [
            self.requests,
            self.dur,
            self.dur_sum,
            self.up,
            self.up_sum,
            self.bytes_in,
            self.bytes_out,
            self.paths,
        ]

    def add(self, d: list[Any]) -> None:
        reqs, dur, dur_sum, up, up_sum, b_in, b_out, paths = d
        if len(reqs) != len(self.requests) or len(dur) != len(self.dur) or len(up) != len(self.up):
            raise ValueError("incompatible series layout")
        for i, v in enumerate(reqs):
            self.requests[i] += v
        for i, v in enumerate(dur):
            self.dur[i] += v
        for i, v in enumerate(up):
            self.up[i] += v
        self.dur_sum += dur_sum
        self.up_sum += up_sum
        self.bytes_in += b_in
        self.bytes_out += b_out
        for i, v in enumerate(paths):
            self.paths[i] += v


@dataclass
class Snapshot:
    """Cumulative values of one or more processes, mergeable."""

    buckets: tuple[float, ...]
    series: dict[tuple[str, str], _Series] = field(default_factory=dict)
    rejections: dict[tuple[str, str, str], int] = field(default_factory=dict)
    cache: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (route, profile, status class) and (route, operation, status class)
    profiles: dict[tuple[str, str, str], int] = field(default_factory=dict)
    graphql: dict[tuple[str, str, str], int] = field(default_factory=dict)
    reloads: dict[str, int] = field(default_factory=dict)
    #: (upstream, reason) → targets ejected (``portway.upstream.ejections``)
    ejections: dict[tuple[str, str], int] = field(default_factory=dict)
    active_connections: int = 0
    #: ``publish`` plugin: (sink, reason) → events; reason ``""`` counts sent events
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (upstream, target) → requests refused by a full connection pool
    overflows: dict[tuple[str, str], int] = field(default_factory=dict)

    def to_json(self, pid: int) -> bytes:
        return orjson.dumps(
            {
                "pid": pid,
                "buckets": list(self.buckets),
                "series": [[r, u, *s.dump()] for (r, u), s in self.series.items()],
                "rejections": [[*k, v] for k, v in self.rejections.items()],
                "cache": [[*k, v] for k, v in self.cache.items()],
                "profiles": [[*k, v] for k, v in self.profiles.items()],
                "graphql": [[*k, v] for k, v in self.graphql.items()],
                "reloads": self.reloads,
                "ejections": [[*k, v] for k, v in self.ejections.items()],
                "active_connections": self.active_connections,
                "events": [[*k, v] for k, v in self.events.items()],
                "overflows": [[*k, v] for k, v in self.overflows.items()],
            }
        )

    def merge_json(self, data: Mapping[str, Any], *, alive: bool) -> None:
        """Add another process's dump; gauges count only when that process is ``alive``."""
        if tuple(data.get("buckets", ())) != self.buckets:
            raise ValueError("histogram buckets differ")
        nb = len(self.buckets)
        for row in data.get("series", ()):
            key = (str(row[0]), str(row[1]))
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = _Series(nb)
            s.add(row[2:])
        for r, p, st, n in data.get("rejections", ()):
            k3 = (str(r), str(p), str(st))
            self.rejections[k3] = self.rejections.get(k3, 0) + int(n)
        for r, res, n in data.get("cache", ()):
            k2 = (str(r), str(res))
            self.cache[k2] = self.cache.get(k2, 0) + int(n)
        for table2 in ("ejections", "events", "overflows"):
            into2: dict[tuple[str, str], int] = getattr(self, table2)
            for a, b, n in data.get(table2, ()):
                k2 = (str(a), str(b))
                into2[k2] = into2.get(k2, 0) + int(n)
        for table in ("profiles", "graphql"):
            into: dict[tuple[str, str, str], int] = getattr(self, table)
            for a, b, c, n in data.get(table, ()):
                k3 = (str(a), str(b), str(c))
                into[k3] = into.get(k3, 0) + int(n)
        for res, n in dict(data.get("reloads", {})).items():
            self.reloads[str(res)] = self.reloads.get(str(res), 0) + int(n)
        if alive:
            self.active_connections += int(data.get("active_connections", 0))


#: a C static when compiled (a module-global name is a dict lookup per call)
_perf_counter: Final = perf_counter

UpstreamsSource = Callable[[], Mapping[str, Any]]


def _bucket(bounds: tuple[float, ...], v: float) -> int:
    """``bisect.bisect_left(bounds, v)``, compiled, scanning from the smallest bound: most
    requests fall in the first buckets, so one or two comparisons (the C ``bisect`` compares
    boxed floats through the generic protocol, which cost more than the rest of the
    observer)."""
    n = len(bounds)
    i = 0
    while i < n and bounds[i] < v:
        i += 1
    return i


class Metrics(Observer):
    """The gateway's metrics sink; one per process.

    Contract for the data plane:

    - ``on_request_done(ctx)`` once per request after its last byte (also for errors,
      short-circuits and disconnects); never raises;
    - ``connection_opened()`` / ``connection_closed()`` around every client connection;
    - ``config_reload("ok" | "error")`` after every reload attempt;
    - ``cache_result(route, result)`` or ``ctx.extra["cache"] = "hit" | "miss" | …``;
    - ``set_upstreams_source(fn)``: ``fn()`` returns the current ``{name: Upstream}`` and is
      read at scrape time for target health and breaker state;
    - ``await start()`` / ``await aclose()`` run the cross-worker flush loop (only when a
      multiprocess directory is set).

    All methods must be called from the event loop thread.
    """

    def __init__(
        self,
        *,
        multiprocess_dir: str | None = None,
        flush_interval: float = 1.0,
        buckets: Iterable[float] = DURATION_BUCKETS,
        include_default_registry: bool = True,
    ) -> None:
        self.buckets: tuple[float, ...] = tuple(sorted(buckets))
        self._nb = len(self.buckets)
        #: the bucket of the last duration and of the last upstream latency, with its range
        #: (``lo < v <= hi``; bucket 0 first, +inf without buckets): a steady stream stays
        #: in one bucket, and two native float comparisons cost less than a scan of boxed
        #: bounds (c64 durations are in the ms)
        self._d_i = self._u_i = 0
        self._d_lo = self._u_lo = float("-inf")
        self._d_hi = self._u_hi = self.buckets[0] if self.buckets else float("inf")
        #: series by route, then upstream: two lookups of strings whose hashes are cached,
        #: where a (route, upstream) key would be a new tuple to hash per request
        self._by_route: dict[str, dict[str, _Series]] = {}
        #: the series of the last (route, upstream) pair seen (``on_request_done``)
        self._last_route: str | None = None
        self._last_upstream: str | None = None
        self._last_series = _Series(self._nb)
        self._rejections: dict[tuple[str, str, str], int] = {}
        self._cache: dict[tuple[str, str], int] = {}
        self._profiles: dict[tuple[str, str, str], int] = {}
        self._graphql: dict[tuple[str, str, str], int] = {}
        self._reloads: dict[str, int] = {}
        self.active_connections = 0
        self._upstreams: UpstreamsSource | None = None
        self.multiprocess_dir = multiprocess_dir
        self.flush_interval = flush_interval
        self._include_default = include_default_registry
        self._pid = os.getpid()
        self._file: str | None = None
        if multiprocess_dir:
            token = token_hex(4)
            self._file = os.path.join(multiprocess_dir, f"portway-{self._pid}-{token}.json")
        self._task: asyncio.Task[None] | None = None
        self.collector = GatewayCollector(self)
        #: called with the context of every request the gateway itself answered with an
        #: error (the dashboard's recent errors): the check runs here, compiled, so requests
        #: that succeed or relay an upstream's status pay one comparison, not a Python call
        self.error_sink: Callable[[RequestContext], None] | None = None

    @classmethod
    def from_env(cls, **kw: Any) -> Metrics:
        """Multiprocess mode when ``$PROMETHEUS_MULTIPROC_DIR`` is set."""
        return cls(multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None, **kw)

    # --- hot path --------------------------------------------------------------------------
    def _range(self, v: float) -> tuple[int, float, float]:
        """``_bucket`` of ``v`` with its range (``lo < v <= hi``), for the last-bucket memos
        (``_d_i``, ``_u_i``); called only when ``v`` left the remembered range."""
        i = _bucket(self.buckets, v)
        lo = self.buckets[i - 1] if i > 0 else float("-inf")
        return i, lo, self.buckets[i] if i < self._nb else float("inf")

    def on_request_done(self, ctx: RequestContext) -> None:
        match = ctx.match
        route = match.name if match is not None else ""
        upstream = ctx.upstream_name or ""
        # the last pair's series, by identity (the names are the config's own strings): two
        # dict lookups saved on a steady stream; an equal but distinct string only misses
        if route is self._last_route and upstream is self._last_upstream:
            s = self._last_series
        else:
            s = self._series(route, upstream)
        resp = ctx.response
        if resp is None:
            status = 0
            ci = 0
        else:
            status = resp.status
            c = status // 100
            ci = c if 0 < c < 6 else 6
        method = ctx.request.method
        base = _GET_BASE if method == "GET" else _METHOD_BASE.get(method, _OTHER_BASE)
        d = _perf_counter() - ctx.start
        # the last request's bucket when it is this one's (see ``_d_i``)
        if self._d_lo < d <= self._d_hi:
            db = self._d_i
        else:
            db, self._d_lo, self._d_hi = self._range(d)
            self._d_i = db
        s.dur_sum += d
        ul = ctx.upstream_latency
        ub = -1
        if ul is not None:
            u = ul
            if self._u_lo < u <= self._u_hi:
                ub = self._u_i
            else:
                ub, self._u_lo, self._u_hi = self._range(u)
                self._u_i = ub
            s.up_sum += u
        s.count(base + ci, db, ub, ctx.served)
        s.bytes_in += ctx.bytes_in
        s.bytes_out += ctx.bytes_out
        sink = self.error_sink
        if sink is not None and (
            (resp is None and ctx.error is not None)
            or (resp is not None and status >= 400 and not resp.upstream)
        ):
            try:
                sink(ctx)
            except Exception:
                log.exception("error sink failed")
        extra = ctx.extra
        if extra:
            rej = extra.get("rejected_by")
            if rej is not None:
                rk = (route, str(rej), str(status) if status else "none")
                self._rejections[rk] = self._rejections.get(rk, 0) + 1
            cache = extra.get("cache")
            if cache is not None:
                self.cache_result(route, str(cache))
            prof = extra.get("profile")
            if prof is not None:
                pk = (route, str(prof), STATUS_CLASSES[ci])
                self._profiles[pk] = self._profiles.get(pk, 0) + 1
            op = extra.get("graphql_operation")
            if op is not None:
                gk = (route, str(op), STATUS_CLASSES[ci])
                self._graphql[gk] = self._graphql.get(gk, 0) + 1

    def _series(self, route: str, upstream: str) -> _Series:
        """The pair's series (created on first use), remembered as the last one."""
        per = self._by_route.get(route)
        if per is None:
            per = self._by_route[route] = {}
        s = per.get(upstream)
        if s is None:
            s = per[upstream] = _Series(self._nb)
        self._last_route = route
        self._last_upstream = upstream
        self._last_series = s
        return s

    # --- other events ----------------------------------------------------------------------
    def route_paths(self, route: str) -> dict[str, int]:
        """This process's requests of ``route`` by serving path (for ``?explain``)."""
        counts = [0, 0, 0]
        for s in self._by_route.get(route, {}).values():
            s.fold()
            for i, n in enumerate(s.paths):
                counts[i] += n
        return dict(zip(PATH_LABELS, counts, strict=True))

    def connection_opened(self) -> None:
        self.active_connections += 1

    def connection_closed(self) -> None:
        if self.active_connections > 0:
            self.active_connections -= 1

    def config_reload(self, result: str) -> None:
        res = result if result in ("ok", "error") else "error"
        self._reloads[res] = self._reloads.get(res, 0) + 1

    def cache_result(self, route: str | None, result: str) -> None:
        res = result if result in CACHE_RESULTS else "other"
        k = (route or "", res)
        self._cache[k] = self._cache.get(k, 0) + 1

    def set_upstreams_source(self, source: UpstreamsSource | None) -> None:
        self._upstreams = source

    # --- snapshots and cross-worker merge ---------------------------------------------------
    def snapshot(self) -> Snapshot:
        """A copy of this process's values (safe to merge into)."""
        snap = Snapshot(self.buckets)
        for route, per in self._by_route.items():
            for upstream, s in per.items():
                c = _Series(self._nb)
                c.add(s.dump())
                snap.series[(route, upstream)] = c
        snap.rejections = dict(self._rejections)
        snap.cache = dict(self._cache)
        snap.profiles = dict(self._profiles)
        snap.graphql = dict(self._graphql)
        for k, n in _cache_plugin_counts().items():
            snap.cache[k] = snap.cache.get(k, 0) + n
        snap.reloads = dict(self._reloads)
        snap.ejections = _ejection_counts()
        snap.active_connections = self.active_connections
        snap.events = _event_counts()
        snap.overflows = _overflow_counts()
        return snap

    def merged(self) -> Snapshot:
        """This process's live values plus the last dumps of every other worker."""
        snap = self.snapshot()
        d = self.multiprocess_dir
        if not d:
            return snap
        try:
            names = os.listdir(d)
        except OSError:
            return snap
        own = os.path.basename(self._file) if self._file else None
        for name in names:
            if not (name.startswith("portway-") and name.endswith(".json")) or name == own:
                continue
            path = os.path.join(d, name)
            try:
                with open(path, "rb") as f:
                    data = orjson.loads(f.read())
                pid = int(data.get("pid", 0))
                snap.merge_json(data, alive=_pid_alive(pid))
            except (OSError, ValueError, TypeError, KeyError) as e:
                log.warning("skipping metrics file %s: %s", path, e)
        return snap

    def flush(self) -> None:
        """Write this process's cumulative values for other workers' scrapes (atomic)."""
        if self._file is None:
            return
        tmp = f"{self._file}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(self.snapshot().to_json(self._pid))
            os.replace(tmp, self._file)
        except OSError as e:
            log.warning("cannot write metrics file %s: %s", self._file, e)

    async def start(self) -> None:
        if self._file is not None and self._task is None:
            self.flush()
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            self.flush()

    async def aclose(self) -> None:
        """Stop flushing; the final dump keeps this worker's counters in the merged totals."""
        task, self._task = self._task, None
        await stop_task(task)
        # A clean exit leaves no live connections: gauges must not linger for a dead pid.
        self.active_connections = 0
        self.flush()

    # --- exposition ------------------------------------------------------------------------
    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Exposition body and its content type, negotiated from an ``Accept`` header."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(_Chain(self._sources())), content_type

    def _sources(self) -> list[Any]:
        out: list[Any] = [self.collector]
        if not self._include_default:
            return out
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            mp = multiprocess.MultiProcessCollector(None, self.multiprocess_dir)  # type: ignore[no-untyped-call]
            out.append(_MultiProcess(mp))
        else:
            from prometheus_client import REGISTRY

            out.append(REGISTRY)
        return out


_default: Metrics | None = None


def get_metrics() -> Metrics:
    """The process-wide :class:`Metrics` (multiprocess mode when the supervisor set
    ``$PROMETHEUS_MULTIPROC_DIR``). Created on first use, after the worker has forked."""
    global _default
    if _default is None:
        _default = Metrics.from_env()
    return _default
