"""Process-wide count of passive and active ejections, for ``portway_upstream_ejections_total``.

Kept outside the upstream objects, which a reload replaces: a counter must not restart when
the config changes. The metrics read :func:`counts` at scrape/flush time through the
registration seam (``observability/sources.py``); the runtime registers it, since this layer
sits below observability."""

from __future__ import annotations

#: (upstream, reason) → ejections since the process started
_COUNTS: dict[tuple[str, str], int] = {}


def record(upstream: str, reason: str) -> None:
    """Count one target taken out of service (``reason`` is a bounded word: ``active``,
    ``connect_error``, ``timeout``, ``reset`` or ``status``)."""
    k = (upstream, reason)
    _COUNTS[k] = _COUNTS.get(k, 0) + 1


def counts() -> dict[tuple[str, str], int]:
    return dict(_COUNTS)
