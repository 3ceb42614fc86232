"""Scrape-time half of the gateway metrics: the Prometheus families and the counters read
from registered sources.

:class:`~portway.observability.metrics.Metrics` counts per request (compiled, plain ints);
everything here runs only when ``/metrics`` is scraped or a snapshot is taken: the
:class:`GatewayCollector` that turns a merged :class:`~portway.observability.metrics.Snapshot`
into ``portway_*`` families, the counters other components register in
``observability/sources.py`` (cache plugin, ejections, ``publish`` sinks, pool overflows), the
registry chain the encoders read, and the upstream target snapshot the admin API shares.
prometheus-client is imported inside the functions that need it, so a worker that is never
scraped does not load it. Every public name is re-exported by ``observability/metrics.py``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from portway.observability.sources import (
    EJECTIONS,
    EVENTS,
    POOL_OVERFLOW,
    cache_stats_sources,
    count_sources,
)

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, Metric

    from portway.observability.metrics import Metrics, Snapshot

#: the logger of ``metrics.py``: the messages keep the name operators filter on
log: Final = logging.getLogger("portway.metrics")

#: ``portway_circuit_state`` values
CIRCUIT_STATES: Final[dict[str, int]] = {"closed": 0, "half_open": 1, "open": 2}

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

        # the label tables live with the hot path that indexes by them; imported here, at
        # scrape time, because metrics.py imports this module
        from portway.observability.metrics import METHOD_LABELS, PATH_LABELS, STATUS_CLASSES

        nc = len(STATUS_CLASSES)

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
                        [route, upstream, METHOD_LABELS[i // nc], STATUS_CLASSES[i % nc]], n
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
