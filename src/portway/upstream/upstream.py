"""The runtime view of one ``upstreams:`` entry (placeholder: round robin, no health/breaker;
the full balancer/health/breaker/retry set plugs in behind the same methods)."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from portway.config.schema import UpstreamConfig
from portway.pipeline.context import RequestContext
from portway.upstream.target import Target

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def make_target(url: str, weight: int = 1) -> Target:
    u = urlsplit(url)
    scheme = u.scheme or "http"
    port = u.port or (443 if scheme == "https" else 80)
    host = u.hostname or "127.0.0.1"
    return Target(id=f"{host}:{port}", host=host, port=port, scheme=scheme, weight=weight)


class Upstream:
    """Picks targets and learns from outcomes. Contract used by ``proxy.forward``:

    - ``pick(ctx, exclude)`` → an available target not in ``exclude``, or ``None``;
    - ``record(target, ok, latency, status, error)`` after every attempt (feeds passive health,
      breakers and latency balancers);
    - ``may_retry(ctx, attempt, sent, reason)`` whether another attempt is allowed;
    - ``backoff(attempt)`` seconds to wait before the next attempt;
    - ``start()``/``aclose()`` run and stop background work (probes, discovery).
    """

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        self.targets: list[Target] = [make_target(t.url, t.weight) for t in config.targets]
        self._rr = 0

    def pick(self, ctx: RequestContext, exclude: set[Target]) -> Target | None:
        n = len(self.targets)
        for _ in range(n):
            t = self.targets[self._rr % n]
            self._rr += 1
            if t not in exclude and t.available:
                return t
        return None

    def record(
        self,
        target: Target,
        ok: bool,
        latency: float,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        if latency > 0:
            target.ewma = latency if target.ewma == 0 else 0.8 * target.ewma + 0.2 * latency

    def may_retry(self, ctx: RequestContext, attempt: int, sent: bool, reason: str) -> bool:
        r = self.config.retries
        if attempt >= r.attempts or reason not in r.on:
            return False
        if sent and ctx.request.method not in IDEMPOTENT:
            route = ctx.match.route if ctx.match else None
            return bool(route and route.retry_non_idempotent)
        return True

    def backoff(self, attempt: int) -> float:
        return 0.0

    def retry_after(self) -> int:
        """Seconds a client should wait when no target is available (for ``Retry-After``)."""
        return 1

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def now(self) -> float:
        return time.monotonic()
