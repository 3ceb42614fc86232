"""Gateway metrics in the Prometheus exposition format.

The hot path (:meth:`Metrics.on_request_done`) touches only plain Python ints and floats held
per ``(route, upstream)`` pair: one dict lookup, a few list increments and a ``bisect`` for the
histogram bucket. prometheus-client objects are built only at scrape time by a custom collector
(:class:`GatewayCollector`), which is what keeps the per-request cost around a microsecond
(``bench/metrics_bench.py``); prometheus-client's own labelled children take a lock and, in
multiprocess mode, write to an mmap on every increment.

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
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

import orjson

from portway.observability.observer import Observer
from portway.observability.sources import (
    EJECTIONS,
    EVENTS,
    POOL_OVERFLOW,
    cache_stats_sources,
    count_sources,
)
from portway.tasks import stop_task

if TYPE_CHECKING:
    # prometheus-client is imported at scrape time only (a worker that is never scraped
    # does not pay its ~4 MB)
    from prometheus_client.core import CounterMetricFamily, Metric

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
_CLASS_OF: Final[dict[int, int]] = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
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
#: ``portway_circuit_state`` values
CIRCUIT_STATES: Final[dict[str, int]] = {"closed": 0, "half_open": 1, "open": 2}


#: label values of ``portway_route_path_requests_total``, by ``RequestContext.served``
PATH_LABELS: Final[tuple[str, ...]] = ("general", "fast", "fallback")


class _Series:
    """Cumulative values of one (route, upstream) pair; histogram buckets are not cumulative."""

    __slots__ = ("bytes_in", "bytes_out", "dur", "dur_sum", "paths", "requests", "up", "up_sum")

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

    def dump(self) -> list[Any]:
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
        #: series by route, then upstream: two lookups of strings whose hashes are cached,
        #: where a (route, upstream) key would be a new tuple to hash per request
        self._by_route: dict[str, dict[str, _Series]] = {}
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
            token = secrets.token_hex(4)
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
    def on_request_done(self, ctx: RequestContext) -> None:
        match = ctx.match
        route = match.name if match is not None else ""
        upstream = ctx.upstream_name or ""
        per = self._by_route.get(route)
        if per is None:
            per = self._by_route[route] = {}
        s = per.get(upstream)
        if s is None:
            s = per[upstream] = _Series(self._nb)
        resp = ctx.response
        if resp is None:
            status = 0
            ci = 0
        else:
            status = resp.status
            ci = _CLASS_OF.get(status // 100, 6)
        s.requests[_METHOD_BASE.get(ctx.request.method, _OTHER_BASE) + ci] += 1
        d = perf_counter() - ctx.start
        s.dur[_bucket(self.buckets, d)] += 1
        s.dur_sum += d
        ul = ctx.upstream_latency
        if ul is not None:
            s.up[_bucket(self.buckets, ul)] += 1
            s.up_sum += ul
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
        s.paths[ctx.served] += 1
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

    # --- other events ----------------------------------------------------------------------
    def route_paths(self, route: str) -> dict[str, int]:
        """This process's requests of ``route`` by serving path (for ``?explain``)."""
        counts = [0, 0, 0]
        for s in self._by_route.get(route, {}).values():
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


_EVENT_NAME: Final = re.compile(r"^[a-z_]{1,32}$")


def _cache_plugin_counts() -> dict[tuple[str, str], int]:
    """Counters of the running cache plugins, from the sources they registered
    (``observability/sources.py``); event names come from the plugin's code, so they are
    bounded."""
    out: dict[tuple[str, str], int] = {}
    for source in cache_stats_sources():
        try:
            routes = source().get("routes", {})
        except Exception as e:  # the cache's bookkeeping must never break a scrape
            log.warning("cache stats unavailable: %s", e)
            continue
        for route, counters in routes.items():
            for event, n in dict(counters).items():
                if isinstance(n, int) and _EVENT_NAME.match(str(event)):
                    k = (str(route), str(event))
                    out[k] = out.get(k, 0) + n
    return out


def _ejection_counts() -> dict[tuple[str, str], int]:
    """Ejections by (upstream, reason), from the registered sources (``upstream/ejections.py``,
    registered by the runtime); reasons are bounded words of the health code."""
    return _pair_counts(EJECTIONS, "ejection", lambda u, why: bool(_EVENT_NAME.match(why)))


def _event_counts() -> dict[tuple[str, str], int]:
    """Counters of the ``publish`` plugin's sinks by (sink, reason), reason ``""`` for sent
    events, from the sources it registered; sink kinds and reasons come from its code."""
    return _pair_counts(
        EVENTS,
        "event",
        lambda sink, why: (
            bool(_EVENT_NAME.match(sink)) and (why == "" or bool(_EVENT_NAME.match(why)))
        ),
    )


def _overflow_counts() -> dict[tuple[str, str], int]:
    """Requests refused by a full connection pool, by (upstream, target)."""
    return _pair_counts(POOL_OVERFLOW, "pool overflow", lambda u, t: True)


def _pair_counts(
    kind: str, what: str, keep: Callable[[str, str], bool]
) -> dict[tuple[str, str], int]:
    """The sum of the ``{(a, b): count}`` of every source registered under ``kind`` (pairs
    ``keep`` accepts); a source that fails is skipped: bookkeeping never breaks a scrape."""
    out: dict[tuple[str, str], int] = {}
    for source in count_sources(kind):
        try:
            items = list(dict(source()).items())
        except Exception as e:
            log.warning("%s counters unavailable: %s", what, e)
            continue
        for k, n in items:
            a, b = str(k[0]), str(k[1])
            if keep(a, b):
                out[(a, b)] = out.get((a, b), 0) + int(n)
    return out


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Chain:
    """Duck-typed registry for the encoders: yields the metrics of several collectors."""

    def __init__(self, sources: list[Any]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for s in self._sources:
            yield from s.collect()


class _MultiProcess:
    def __init__(self, collector: Any) -> None:
        self._c = collector

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._c.collect()
        except (OSError, ValueError) as e:
            log.warning("prometheus multiprocess collection failed: %s", e)


def _cumulate(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    acc = 0
    for b, c in zip(bounds, counts, strict=False):
        acc += c
        out.append((_fmt_bound(b), float(acc)))
    acc += counts[-1]
    out.append(("+Inf", float(acc)))
    return out


def _fmt_bound(b: float) -> str:
    return repr(float(b))


class GatewayCollector:
    """Builds the ``portway_*`` metric families from merged values at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self._m
        snap = m.merged()
        yield from self._request_families(snap)
        yield _counters(
            "portway_plugin_rejections",
            "Requests answered early by a plugin",
            ["route", "plugin", "status"],
            snap.rejections.items(),
        )
        yield _counters(
            "portway_cache_requests",
            "Response cache lookups by result",
            ["route", "result"],
            snap.cache.items(),
        )
        yield _counters(
            "portway_upstream_ejections",
            "Targets taken out of service by health checks, by reason (active, connect_error, "
            "timeout, reset, status)",
            ["upstream", "reason"],
            snap.ejections.items(),
        )
        sent = CounterMetricFamily(
            "portway_events_sent", "Events delivered by the publish plugin", labels=["sink"]
        )
        dropped = CounterMetricFamily(
            "portway_events_dropped",
            "Events the publish plugin lost before delivery",
            labels=["sink", "reason"],
        )
        for (sink, reason), n in sorted(snap.events.items()):
            if reason:
                dropped.add_metric([sink, reason], n)
            else:
                sent.add_metric([sink], n)
        yield sent
        yield dropped
        yield _counters(
            "portway_upstream_pool_overflow",
            "Requests refused with 503 upstream_overloaded: the target's connection pool was "
            "at pool.max_connections and no connection came within pool.queue_timeout (or "
            "pool.max_queue were waiting)",
            ["upstream", "target"],
            snap.overflows.items(),
        )
        yield _counters(
            "portway_profile_requests",
            "Requests by route and BFF profile",
            ["route", "profile", "status_class"],
            snap.profiles.items(),
        )
        yield _counters(
            "portway_graphql_operations",
            "GraphQL requests by route and operation name (bounded by the graphql plugin)",
            ["route", "operation", "status_class"],
            snap.graphql.items(),
        )
        reloads = CounterMetricFamily(
            "portway_config_reloads", "Configuration reload attempts", labels=["result"]
        )
        for res in ("ok", "error"):
            reloads.add_metric([res], snap.reloads.get(res, 0))
        yield reloads
        yield GaugeMetricFamily(
            "portway_active_connections",
            "Open client connections",
            value=snap.active_connections,
        )
        yield from self._target_families()

    def _request_families(self, snap: Snapshot) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        reqs = CounterMetricFamily(
            "portway_requests",
            "Requests handled",
            labels=["route", "upstream", "method", "status_class"],
        )
        dur = HistogramMetricFamily(
            "portway_request_duration_seconds",
            "Time from the first byte of the request to the last byte of the response",
            labels=["route", "upstream"],
        )
        up = HistogramMetricFamily(
            "portway_upstream_duration_seconds",
            "Time from sending the request upstream to its response head",
            labels=["route", "upstream"],
        )
        b_in = CounterMetricFamily(
            "portway_bytes_received",
            "Request bytes received from clients",
            labels=["route", "upstream"],
        )
        b_out = CounterMetricFamily(
            "portway_bytes_sent", "Response bytes sent to clients", labels=["route", "upstream"]
        )
        paths = CounterMetricFamily(
            "portway_route_path_requests",
            "Requests per route by the path that served them: fast (task-free), general "
            "(a task), fallback (started task-free, finished by a task)",
            labels=["route", "path"],
        )
        by_route: dict[str, list[int]] = {}
        bounds = snap.buckets
        for (route, upstream), s in sorted(snap.series.items()):
            counts = by_route.setdefault(route, [0, 0, 0])
            for i, n in enumerate(s.paths):
                counts[i] += n
            for i, n in enumerate(s.requests):
                if n:
                    reqs.add_metric(
                        [route, upstream, METHOD_LABELS[i // _NC], STATUS_CLASSES[i % _NC]], n
                    )
            dur.add_metric([route, upstream], _cumulate(s.dur, bounds), s.dur_sum)
            if any(s.up):
                up.add_metric([route, upstream], _cumulate(s.up, bounds), s.up_sum)
            b_in.add_metric([route, upstream], s.bytes_in)
            b_out.add_metric([route, upstream], s.bytes_out)
        for route, counts in by_route.items():
            if route:
                for i, n in enumerate(counts):
                    paths.add_metric([route, PATH_LABELS[i]], n)
        yield from (reqs, dur, up, b_in, b_out, paths)

    def _target_families(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["upstream", "target"]
        up_g = GaugeMetricFamily(
            "portway_upstream_target_up", "1 when the target is healthy", labels=labels
        )
        drain_g = GaugeMetricFamily(
            "portway_upstream_target_draining", "1 when the target is draining", labels=labels
        )
        circ = GaugeMetricFamily(
            "portway_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            labels=labels,
        )
        inflight = GaugeMetricFamily(
            "portway_upstream_target_in_flight", "Requests in flight to the target", labels=labels
        )
        source = self._m._upstreams
        if source is not None:
            try:
                ups = dict(source())
            except Exception as e:  # a half-built graph must not break the scrape
                log.warning("upstream snapshot failed: %s", e)
                ups = {}
            for name, upstream in sorted(ups.items()):
                for t in target_snapshot(upstream):
                    lab = [name, str(t.get("id", ""))]
                    up_g.add_metric(lab, 1.0 if t.get("healthy", True) else 0.0)
                    drain_g.add_metric(lab, 1.0 if t.get("draining", False) else 0.0)
                    inflight.add_metric(lab, float(t.get("in_flight", 0) or 0))
                    circ.add_metric(lab, float(breaker_state_value(t.get("breaker"))))
        yield from (up_g, drain_g, circ, inflight)


def _counters(
    name: str, doc: str, labels: list[str], table: Iterable[tuple[tuple[str, ...], int]]
) -> CounterMetricFamily:
    """A counter family with a sample per ``(label values, count)`` of ``table``."""
    from prometheus_client.core import CounterMetricFamily

    fam = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(table):
        fam.add_metric(list(key), n)
    return fam


def breaker_state_value(breaker: Any) -> int:
    """``portway_circuit_state`` value of a snapshot's ``breaker`` entry (no breaker: closed)."""
    if breaker is None:
        return 0
    state: Any = breaker
    if isinstance(breaker, Mapping):
        state = breaker.get("state", "closed")
    elif not isinstance(breaker, str):
        state = getattr(breaker, "state", "closed")
    state = getattr(state, "name", state)
    return CIRCUIT_STATES.get(str(state).lower().replace("-", "_"), 0)


def target_snapshot(upstream: Any) -> list[dict[str, Any]]:
    """``upstream.snapshot()`` when the upstream implements it, else read its targets."""
    snap = getattr(upstream, "snapshot", None)
    if callable(snap):
        rows = snap()
        return [dict(r) for r in rows]
    out: list[dict[str, Any]] = []
    for t in getattr(upstream, "targets", ()):
        b = getattr(t, "breaker", None)
        out.append(
            {
                "id": t.id,
                "url": f"{t.scheme}://{t.host}:{t.port}",
                "weight": t.weight,
                "healthy": t.healthy,
                "draining": t.draining,
                "breaker": None if b is None else breaker_name(b),
                "in_flight": t.in_flight,
                "ewma_ms": round(t.ewma * 1000, 3),
            }
        )
    return out


def breaker_name(breaker: Any) -> str:
    return {v: k for k, v in CIRCUIT_STATES.items()}[breaker_state_value(breaker)]


_default: Metrics | None = None


def get_metrics() -> Metrics:
    """The process-wide :class:`Metrics` (multiprocess mode when the supervisor set
    ``$PROMETHEUS_MULTIPROC_DIR``). Created on first use, after the worker has forked."""
    global _default
    if _default is None:
        _default = Metrics.from_env()
    return _default
