"""prometheus-client counters that cost nothing until a feature counts something.

A module-level ``Counter(...)`` imports prometheus-client (~4 MB of a worker's RSS with its
dependencies) when the module is imported, even in a gateway whose config never uses the
feature; a :class:`LazyCounter` imports it and registers the counter (in the default
registry, which the ``/metrics`` scrape includes) on the first :meth:`LazyCounter.labels`.
Until then the family is absent from a scrape rather than shown with no samples.

Importing prometheus-client late also means it reads ``PROMETHEUS_MULTIPROC_DIR`` after the
supervisor has set it, so under ``--workers N`` these counters are the multiprocess kind and
a scrape served by any worker sums them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter


class LazyCounter:
    """The arguments of a ``prometheus_client.Counter``, created on first use."""

    __slots__ = ("_counter", "documentation", "labelnames", "name")

    def __init__(self, name: str, documentation: str, labelnames: list[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._counter: Counter | None = None

    @property
    def counter(self) -> Counter:
        """The registered counter (created and registered now if it was not yet)."""
        c = self._counter
        if c is None:
            from prometheus_client import Counter

            c = self._counter = Counter(self.name, self.documentation, self.labelnames)
        return c

    def labels(self, *values: str) -> Any:
        """The child of these label values, as ``Counter.labels`` returns it."""
        return self.counter.labels(*values)
