"""Live traffic figures for the dashboard, from the gateway's own metrics.

:class:`LiveStats` keeps a ring of cumulative :class:`~portway.observability.metrics.Snapshot`
samples (every ``interval`` seconds, for ``window`` seconds) taken from
``Metrics.merged()`` — so every worker's traffic counts — and derives rates, error ratios and
latency percentiles from the difference between the newest sample and the oldest one inside
the asked window. No Prometheus server is needed and nothing runs on the request path: the
sampler reads counters the metrics observer keeps anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portway.observability.metrics import STATUS_CLASSES, Snapshot

log = logging.getLogger("portway.admin")

_NC = len(STATUS_CLASSES)


@dataclass(frozen=True)
class _Totals:
    """Request counts by status class and the (non-cumulative) duration histogram."""

    classes: tuple[int, ...]
    buckets: tuple[int, ...]

    @property
    def requests(self) -> int:
        return sum(self.classes)


def _totals(snap: Snapshot, route: str | None = None) -> _Totals:
    classes = [0] * _NC
    buckets = [0] * (len(snap.buckets) + 1)
    for (r, _u), s in snap.series.items():
        if route is not None and r != route:
            continue
        for i, n in enumerate(s.requests):
            classes[i % _NC] += n
        for i, n in enumerate(s.dur):
            buckets[i] += n
    return _Totals(tuple(classes), tuple(buckets))


def _minus(a: _Totals, b: _Totals) -> _Totals:
    return _Totals(
        tuple(max(0, x - y) for x, y in zip(a.classes, b.classes, strict=True)),
        tuple(max(0, x - y) for x, y in zip(a.buckets, b.buckets, strict=True)),
    )


def quantile(q: float, bounds: tuple[float, ...], counts: tuple[int, ...]) -> float | None:
    """Prometheus ``histogram_quantile``: linear interpolation inside the bucket that holds
    the ``q``-th observation; the overflow bucket answers its lower bound. ``None`` when
    there are no observations."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i]
            return lower + (upper - lower) * ((rank - seen) / n)
        seen += n
    return bounds[-1] if bounds else None


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def figures(t: _Totals, seconds: float, bounds: tuple[float, ...]) -> dict[str, Any]:
    """Rate, error ratios, status classes and p50/p95/p99 (ms) of ``t`` over ``seconds``."""
    n = t.requests
    by_class = dict(zip(STATUS_CLASSES, t.classes, strict=True))
    return {
        "requests": n,
        "rps": round(n / seconds, 3) if seconds > 0 else 0.0,
        "error_rate": round(by_class["5xx"] / n, 4) if n else 0.0,
        "client_error_rate": round(by_class["4xx"] / n, 4) if n else 0.0,
        "status": by_class,
        "p50_ms": _ms(quantile(0.50, bounds, t.buckets)),
        "p95_ms": _ms(quantile(0.95, bounds, t.buckets)),
        "p99_ms": _ms(quantile(0.99, bounds, t.buckets)),
    }


class LiveStats:
    """A ring of metric samples and the figures derived from it.

    ``source`` returns a cumulative snapshot of every worker (``Metrics.merged``); ``clock``
    is injectable for tests. :meth:`sample` may also be called directly (the page's first
    view does not wait for the sampler's next tick)."""

    def __init__(
        self,
        source: Callable[[], Snapshot],
        *,
        interval: float = 2.0,
        window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self.interval = interval
        self.window = window
        self._clock = clock
        self._ring: deque[tuple[float, Snapshot]] = deque(maxlen=int(window / interval) + 2)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> tuple[float, Snapshot]:
        point = (self._clock(), self._source())
        self._ring.append(point)
        return point

    async def start(self) -> None:
        if self._task is None:
            self.sample()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sample()
            except Exception:  # a bad metrics file must not stop the sampler
                log.exception("dashboard sampler failed")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _base(self, now: float, seconds: float) -> tuple[float, Snapshot] | None:
        """The oldest sample not older than ``seconds``."""
        for t, snap in self._ring:
            if now - t <= seconds + 1e-9:
                return t, snap
        return None

    def view(self, seconds: float = 300.0, points: int = 60) -> dict[str, Any]:
        """Figures over the last ``seconds``: totals, per route, and a request-rate series."""
        now, cur = self._ring[-1] if self._ring else self.sample()
        if now < self._clock() - self.interval / 2:
            now, cur = self.sample()
        base = self._base(now, seconds)
        if base is None or base[1] is cur:
            base_t, base_snap = now, Snapshot(cur.buckets)
            span = 0.0
        else:
            base_t, base_snap = base
            span = now - base_t
        bounds = cur.buckets
        total = _minus(_totals(cur), _totals(base_snap))
        routes: dict[str, Any] = {}
        for name in sorted({r for r, _u in cur.series}):
            t = _minus(_totals(cur, name), _totals(base_snap, name))
            routes[name or "(no route)"] = figures(t, span, bounds)
        return {
            "window_s": round(span, 3),
            "total": figures(total, span, bounds),
            "routes": routes,
            "series": self._series(now, seconds, points),
        }

    def _series(self, now: float, seconds: float, points: int) -> list[dict[str, Any]]:
        """Requests/s and 5xx/s between consecutive samples inside the window (at most
        ``points`` of them, the newest last)."""
        inside = [(t, s) for t, s in self._ring if now - t <= seconds + 1e-9]
        step = max(1, len(inside) // max(1, points))
        picked = inside[::step]
        if inside and picked[-1] is not inside[-1]:
            picked.append(inside[-1])
        out: list[dict[str, Any]] = []
        for (t0, s0), (t1, s1) in itertools.pairwise(picked):
            d = _minus(_totals(s1), _totals(s0))
            dt = t1 - t0
            if dt <= 0:
                continue
            out.append(
                {
                    "t": round(t1 - now, 1),
                    "rps": round(d.requests / dt, 3),
                    "errors_ps": round(d.classes[STATUS_CLASSES.index("5xx")] / dt, 3),
                }
            )
        return out
