"""Requests refused because a target's connection pool was full, for
``portway_upstream_pool_overflow_total{upstream,target}``.

A full pool (``pool.max_connections`` open and no connection within ``pool.queue_timeout``,
or ``pool.max_queue`` already waiting) is the gateway protecting the target, not the target
failing: the request gets :class:`~portway.errors.UpstreamOverloadedError` (503
``upstream_overloaded``), and nothing is recorded against the target's health or breaker.
The counts are process-wide (a reload must not restart them) and reach the metrics through
the registration seam (``observability/sources.py``).
"""

from __future__ import annotations

from portway.errors import UpstreamOverloadedError
from portway.http.exceptions import PoolOverflowError
from portway.observability.sources import POOL_OVERFLOW, register_counts

#: (upstream, target id) → requests refused since the process started
_COUNTS: dict[tuple[str, str], int] = {}


def overloaded(upstream: str, target: str, e: PoolOverflowError) -> UpstreamOverloadedError:
    """Count one refusal and build the client's 503 (``e`` says why, for the logs)."""
    k = (upstream, target)
    _COUNTS[k] = _COUNTS.get(k, 0) + 1
    why = "queue timeout" if e.waited else "queue full"
    return UpstreamOverloadedError(
        f"upstream {upstream} target {target} is at its connection limit ({why})",
        source="upstream",
    )


def counts() -> dict[tuple[str, str], int]:
    return dict(_COUNTS)


register_counts(POOL_OVERFLOW, counts)
