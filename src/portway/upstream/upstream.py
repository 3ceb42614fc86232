"""The runtime view of one ``upstreams:`` entry: targets, balancer, health, breakers, retries
and DNS discovery behind one small interface used by the forward proxy."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

from portway.config.schema import UpstreamConfig
from portway.pipeline.context import RequestContext
from portway.upstream import ejections
from portway.upstream.balancer import Balancer, make_balancer, peak_ewma_observe
from portway.upstream.breaker import CircuitBreaker
from portway.upstream.discovery import Discovery, DnsResolver, Endpoint
from portway.upstream.health import HealthChecker, Probe
from portway.upstream.retry import IDEMPOTENT, RetryBudget, RetryPolicy
from portway.upstream.target import Target

__all__ = ["IDEMPOTENT", "StateListener", "Upstream", "make_target"]

log: Final = logging.getLogger("portway.upstream")

#: ``(upstream, target, what, value)``; ``what`` is ``"healthy"`` (bool), ``"breaker"``
#: (``"closed" | "open" | "half_open"``), ``"added"`` or ``"removed"`` (True)
StateListener = Callable[["Upstream", Target, str, Any], None]

#: upper bound of the ``Retry-After`` we advertise
MAX_RETRY_AFTER: Final = 300
#: failure kinds ``record`` passes on as ejection reasons (anything else is a connect error)
_FAILURE_KINDS: Final = frozenset({"connect_error", "timeout", "reset"})


def _target_id(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_target(url: str, weight: int = 1) -> Target:
    u = urlsplit(url)
    scheme = u.scheme or "http"
    port = u.port or (443 if scheme == "https" else 80)
    host = u.hostname or "127.0.0.1"
    return Target(id=_target_id(host, port), host=host, port=port, scheme=scheme, weight=weight)


class Upstream:
    """Picks targets and learns from outcomes. Contract used by ``proxy.forward``, per request:

    1. ``t = pick(ctx, exclude)`` → an available target not in ``exclude`` (the targets this
       request already tried), or ``None`` → answer 503 with ``Retry-After: retry_after()``.
       ``pick`` reserves a half-open breaker probe slot, so every picked target must get
       exactly one ``record(...)`` or, if the attempt is abandoned without an outcome (client
       gone, cancelled), one ``release(t)``.
    2. The proxy increments ``t.in_flight`` before sending and decrements it when the attempt
       ends (least-connections and peak-EWMA read it).
    3. ``record(t, ok, latency, status, error)`` once per attempt: ``ok`` is False when no
       response head arrived (``error`` then says ``"connect_error" | "timeout" | "reset"``);
       ``status`` is the upstream status otherwise; ``latency`` is seconds to the response
       head. Statuses in ``health.passive.on_status`` (default none) count as failures for
       passive health; the breaker counts those and 502/503/504.
    4. On failure: ``may_retry(ctx, attempt, sent, reason)`` with ``attempt`` = attempts made
       so far and ``reason`` the error or the status as a string; if True, sleep
       ``backoff(attempt)`` and go to 1 with the failed target added to ``exclude``.
       ``per_try_timeout`` (seconds or None) bounds each attempt.

    ``start()``/``aclose()`` run and stop background work (probes, discovery). ``targets`` is
    the current member list (replaced, never mutated, on a discovery change). ``make_pool`` is
    called for every target created without a pool (static and discovered); pools of targets
    that discovery removed are closed once they have no request in flight; other pools are
    the runtime's to close.
    """

    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        *,
        make_pool: Callable[[Target], Any] | None = None,
        on_state_change: StateListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        probe: Probe | None = None,
        resolver: DnsResolver | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.on_state_change = on_state_change
        self._make_pool = make_pool
        self._clock = clock
        self._kind = config.balancing
        #: ``http1`` | ``h2c`` | ``h2`` | ``auto`` (read per request: a plain attribute)
        self.protocol: str = config.protocol
        self.targets: list[Target] = []
        for tc in config.targets:
            t = make_target(tc.url, tc.weight)
            if any(o.id == t.id and o.scheme == t.scheme for o in self.targets):
                continue
            self.targets.append(self._init_target(t))
        self._retired: list[Target] = []
        active = config.health.active
        if probe is None and active is not None and config.protocol in ("h2c", "h2"):
            # h2c-only servers (gRPC) reset an HTTP/1.1 probe: probe over HTTP/2
            from portway.upstream.h2probe import H2Probe

            probe = H2Probe(active, tls=config.protocol == "h2")
        self.health = HealthChecker(
            config.health,
            lambda: self.targets,
            self._health_changed,
            on_held=self._ejection_held,
            probe=probe,
            clock=clock,
        )
        #: the last response status found in neither failure set (``record``): a steady
        #: stream of one status skips the two set lookups (0: none yet)
        self._plain_status = 0
        #: panic threshold (percent of members that must be healthy) and whether it is crossed
        self._min_healthy = config.health.min_healthy_percent
        self.panic = False
        r = config.retries
        self.retry = RetryPolicy(r, RetryBudget(r.budget_ratio, r.budget_min_per_second, clock))
        self.discovery: Discovery | None = None
        if config.discovery is not None:
            self.discovery = Discovery(config.discovery, self.apply_endpoints, resolver)
        self._balancer: Balancer | None = None
        self._rebuild(membership=True)

    # --- membership ------------------------------------------------------------------------
    def _init_target(self, t: Target) -> Target:
        if self.config.circuit_breaker is not None:
            t.breaker = CircuitBreaker(self.config.circuit_breaker, self._clock)
        if self._make_pool is not None and t.pool is None:
            t.pool = self._make_pool(t)
        return t

    def _rebuild(self, membership: bool) -> None:
        members = [t for t in self.targets if t.weight > 0 and not t.draining]
        healthy = [t for t in members if t.healthy]
        panic = len(healthy) * 100.0 < self._min_healthy * len(members)
        if panic != self.panic:
            self.panic = panic
            self._panic_changed(panic, len(healthy), len(members))
            membership = True
        if self._kind == "consistent_hash":
            # the ring skips unhealthy targets itself; rebuilding it would only cost time
            if membership or self._balancer is None:
                self._balancer = make_balancer(
                    self._kind, members, self.config.hash_on, panic=panic
                )
            return
        self._balancer = make_balancer(
            self._kind, members if panic else healthy, self.config.hash_on, self._clock, panic
        )

    def set_draining(self, target_id: str, draining: bool) -> bool:
        """Drain (no new requests; in-flight ones finish) or undrain the target ``target_id``;
        ``False`` if there is no such target."""
        found = False
        for t in self.targets:
            if t.id == target_id:
                t.draining = draining
                found = True
        if found:
            self._rebuild(membership=True)
        return found

    def apply_endpoints(self, endpoints: list[Endpoint]) -> None:
        """Make the discovered targets equal ``endpoints``. Targets present before and after
        keep their identity (counters, breaker, pool); removed ones are marked draining and
        kept valid for the requests still using them."""
        scheme = self.config.discovery.scheme if self.config.discovery else "http"
        static = [t for t in self.targets if not t.discovered]
        taken = {(t.host, t.port) for t in static}
        old = {(t.host, t.port): t for t in self.targets if t.discovered}
        old.update({(t.host, t.port): t for t in self._retired if (t.host, t.port) not in old})
        new: list[Target] = []
        for ep in endpoints:
            key = (ep.host, ep.port)
            if key in taken:
                continue
            taken.add(key)
            t = old.pop(key, None)
            if t is None:
                t = Target(
                    id=_target_id(ep.host, ep.port),
                    host=ep.host,
                    port=ep.port,
                    scheme=scheme,
                    weight=ep.weight,
                    discovered=True,
                )
                self._init_target(t)
                log.info("upstream %s: discovered target %s", self.name, t.id)
                self._notify(t, "added", True)
            elif t.draining:
                t.draining = False
                self._retired.remove(t)
                self._notify(t, "added", True)
            t.weight = ep.weight
            new.append(t)
        for t in old.values():
            if not t.draining:
                t.draining = True
                self._retired.append(t)
                log.info("upstream %s: target %s no longer discovered, draining", self.name, t.id)
                self._notify(t, "removed", True)
        self.targets = static + new
        self._rebuild(membership=True)
        self._reap()

    def _reap(self, force: bool = False) -> None:
        keep: list[Target] = []
        for t in self._retired:
            if t.in_flight > 0 and not force:
                keep.append(t)
                continue
            _close_pool(t)
        self._retired = keep

    # --- request path ----------------------------------------------------------------------
    def pick(self, ctx: RequestContext, exclude: set[Target] | frozenset[Target]) -> Target | None:
        now = self._clock()
        if now >= self.health.next_recovery:
            self.health.tick(now)
        bal = self._balancer
        if bal is None:
            return None
        ex = exclude
        for _ in range(len(self.targets) + 1):
            t = bal.pick(ctx, ex)
            if t is None:
                return None
            b: CircuitBreaker | None = t.breaker
            if b is None:
                return t
            before = b.state
            allowed = b.allow(now)
            if b.state != before:
                self._breaker_changed(t, before, b.state)
            if allowed:
                return t
            # lost the last half-open probe slot; never mutate the caller's set
            ex = set(ex)
            ex.add(t)
        return None

    def release(self, target: Target) -> None:
        """Give back what ``pick`` reserved for an attempt that ended without an outcome."""
        if target.breaker is not None:
            target.breaker.release(self._clock())

    def record(
        self,
        target: Target,
        ok: bool,
        latency: float,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        now = self._clock()
        # a response's status decides on its own, whatever ``ok`` says (callers differ on
        # whether a 500 is "ok"); without a status, ``ok``/``error`` do
        if status is not None and error is None:
            if status == self._plain_status:
                failed = sick = False
            else:
                failed = status in self.health.breaker_fail_status
                # (``fail_status`` is a subset of ``breaker_fail_status``, fixed at start)
                sick = status in self.health.fail_status
                if not failed and not sick:
                    self._plain_status = status
            reason = "status"
        else:
            failed = sick = not ok or error is not None
            if error in _FAILURE_KINDS:
                reason = str(error)
            else:
                reason = "reset" if error == "stale" else "connect_error"
        if latency > 0 and error != "connect_error":
            peak_ewma_observe(target, latency, now)
        self.retry.budget.attempt(now)
        b: CircuitBreaker | None = target.breaker
        if b is not None:
            before = b.state
            b.record(not failed, now)
            if b.state != before:
                self._breaker_changed(target, before, b.state)
        self.health.observe(target, sick, now, reason)
        if self._retired and target.draining and target.in_flight <= 0:
            self._reap()

    def may_retry(self, ctx: RequestContext, attempt: int, sent: bool, reason: str) -> bool:
        return self.retry.may_retry(ctx, attempt, sent, reason)

    def backoff(self, attempt: int) -> float:
        return self.retry.backoff(attempt)

    @property
    def per_try_timeout(self) -> float | None:
        return self.config.retries.per_try_timeout

    def retry_after(self) -> int:
        """Seconds a client should wait when no target is available (for ``Retry-After``): the
        earliest moment a breaker half-opens or a target may be healthy again, at least 1."""
        now = self._clock()
        waits: list[float] = []
        for t in self.targets:
            if t.weight <= 0 or t.draining:
                continue
            if not t.healthy:
                waits.append(self.health.retry_in(t, now))
            elif t.breaker is not None:
                waits.append(t.breaker.retry_in(now))
            else:
                waits.append(0.0)
        if not waits:
            waits.append(self.config.discovery.refresh if self.config.discovery else 1.0)
        return max(1, min(MAX_RETRY_AFTER, math.ceil(min(waits))))

    def now(self) -> float:
        return self._clock()

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self.discovery is not None:
            await self.discovery.start()
        self.health.start()

    async def aclose(self) -> None:
        await self.health.aclose()
        if self.discovery is not None:
            await self.discovery.aclose()
        # pools of current targets are the runtime's to close (it shares them across graphs)
        self._reap(force=True)

    # --- observability ---------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        """Per-target state for metrics and the admin API."""
        now = self._clock()
        out: list[dict[str, Any]] = []
        for t in [*self.targets, *self._retired]:
            b: CircuitBreaker | None = t.breaker
            state = "closed"
            if b is not None:
                state = b.state
                if state == "open" and b.available(now):
                    state = "half_open"
            out.append(
                {
                    "id": t.id,
                    "url": t.url,
                    "weight": t.weight,
                    "healthy": t.healthy,
                    "draining": t.draining,
                    "breaker": state,
                    "in_flight": t.in_flight,
                    "ewma_ms": round(t.ewma * 1000.0, 3),
                }
            )
        return out

    def _notify(self, t: Target, what: str, value: Any) -> None:
        cb = self.on_state_change
        if cb is None:
            return
        try:
            cb(self, t, what, value)
        except Exception:
            log.exception("upstream state listener failed")

    def _health_changed(self, t: Target, healthy: bool, reason: str) -> None:
        fields = {"event": "", "upstream": self.name, "target": t.id, "reason": reason}
        if healthy:
            fields["event"] = "upstream_target_healthy"
            log.info(
                "upstream %s: target %s is healthy (%s)", self.name, t.id, reason, extra=fields
            )
        else:
            fields["event"] = "upstream_ejection"
            ejections.record(self.name, reason)
            log.warning(
                "upstream %s: target %s is unhealthy, ejected (%s)",
                self.name,
                t.id,
                reason,
                extra=fields,
            )
        self._rebuild(membership=False)
        self._notify(t, "healthy", healthy)

    def _ejection_held(self, t: Target, reason: str, why: str) -> None:
        log.warning(
            "upstream %s: target %s keeps failing (%s) but stays in service: %s",
            self.name,
            t.id,
            reason,
            why,
            extra={
                "event": "upstream_ejection_held",
                "upstream": self.name,
                "target": t.id,
                "reason": reason,
                "held_by": why,
            },
        )

    def _panic_changed(self, panic: bool, healthy: int, members: int) -> None:
        fields = {
            "event": "upstream_panic" if panic else "upstream_panic_over",
            "upstream": self.name,
            "healthy": healthy,
            "targets": members,
        }
        if panic:
            log.warning(
                "upstream %s: %d of %d targets healthy, below min_healthy_percent: "
                "routing to all targets (panic mode)",
                self.name,
                healthy,
                members,
                extra=fields,
            )
        else:
            log.info("upstream %s: panic mode over", self.name, extra=fields)

    def _breaker_changed(self, t: Target, before: str, after: str) -> None:
        level = logging.WARNING if after == "open" else logging.INFO
        log.log(level, "upstream %s: circuit of %s %s -> %s", self.name, t.id, before, after)
        self._notify(t, "breaker", after)


def _close_pool(t: Target) -> None:
    pool = t.pool
    if pool is None:
        return
    closer = getattr(pool, "aclose", None) or getattr(pool, "close", None)
    if closer is None:
        return
    try:
        res = closer()
    except Exception:
        log.exception("closing the pool of %s failed", t.id)
        return
    if inspect.isawaitable(res):
        _spawn(res)


_background: set[asyncio.Task[Any]] = set()


def _spawn(aw: Awaitable[Any]) -> None:
    async def run() -> None:
        try:
            await aw
        except Exception:
            log.exception("closing a pool failed")

    try:
        task = asyncio.get_running_loop().create_task(run())
    except RuntimeError:
        return
    _background.add(task)
    task.add_done_callback(_background.discard)
