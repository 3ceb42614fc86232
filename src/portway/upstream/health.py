"""Health checking: active probes and passive observation of real traffic.

Both feed one ``healthy`` flag per target. A target goes down after ``unhealthy_after``
consecutive failures of either kind and comes back after ``healthy_after`` consecutive good
probes (active) or, with no active checker, after ``passive.recover_after`` as a trial: it is
marked healthy one failure short of the threshold, so a single failed request sends it back.

Passive ejection is bounded (Envoy's outlier detection, nginx's single-server rule): the last
healthy target is never ejected, and at most ``passive.max_ejection_percent`` of the targets
are passively ejected at once. Passive failures are connect errors, resets and timeouts; an
upstream status counts only when listed in ``passive.on_status`` (default: none), because an
origin answering 503 for its own reasons is alive and ejecting it turns its errors into an
outage. The breaker still counts 502/503/504 (:data:`DEFAULT_FAIL_STATUS`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from portway.config.schema import HealthConfig
from portway.tasks import stop_task
from portway.upstream.target import Target

log: Final = logging.getLogger("portway.upstream")

Probe = Callable[[Target], Awaitable[bool]]
#: ``(target, healthy, reason)`` — called once per transition; ``reason`` is ``"active"``,
#: ``"trial"`` (back after ``recover_after``) or, for a passive ejection, what the failure that
#: tripped it was: ``"connect_error" | "timeout" | "reset" | "status"``
OnChange = Callable[[Target, bool, str], None]
#: ``(target, reason, why_not)`` — a passive ejection that the limits held back
OnHeld = Callable[[Target, str, str], None]

#: statuses the circuit breaker counts as failures, besides ``passive.on_status``
DEFAULT_FAIL_STATUS: Final = frozenset({502, 503, 504})


class HealthChecker:
    """Owns the health fields of an upstream's targets.

    - ``observe(target, failed, now)``: one real request's outcome (passive);
    - ``tick(now)``: returns passively-failed targets to service after ``recover_after`` when
      there is no active checker (cheap; the upstream calls it from ``pick`` when due);
    - ``start()``/``aclose()``: run/stop the active probe loop over ``targets()``.

    ``on_change`` is called exactly once per healthy/unhealthy transition.
    """

    def __init__(
        self,
        cfg: HealthConfig,
        targets: Callable[[], Sequence[Target]],
        on_change: OnChange,
        *,
        on_held: OnHeld | None = None,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._targets = targets
        self._on_change = on_change
        self._on_held = on_held
        self._probe = probe or self._http_probe
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        passive = cfg.passive
        #: read on every response (a plain copy: pydantic attribute reads are slow)
        self._passive = passive
        #: statuses that count against passive health
        self.fail_status: frozenset[int] = frozenset(passive.on_status) if passive else frozenset()
        #: statuses that count against the circuit breaker
        self.breaker_fail_status: frozenset[int] = DEFAULT_FAIL_STATUS | self.fail_status
        self._max_eject_pct = passive.max_ejection_percent if passive else 0.0
        #: earliest ``down_until`` among passively-failed targets (inf when none)
        self.next_recovery = float("inf")

    # --- passive ---------------------------------------------------------------------------
    def observe(self, t: Target, failed: bool, now: float, reason: str = "status") -> None:
        """One request's outcome; ``reason`` says what kind of failure it was."""
        if not failed:
            t.fails = 0
            return
        p = self._passive
        if p is None:
            return
        t.fails += 1
        if t.healthy and t.fails >= p.unhealthy_after:
            held = self._hold_ejection(t)
            if held:
                # reported once per streak of failures, not per failed request
                if t.fails == p.unhealthy_after and self._on_held is not None:
                    self._on_held(t, reason, held)
                return
            t.oks = 0
            if self.cfg.active is None:
                t.down_until = now + p.recover_after
                self.next_recovery = min(self.next_recovery, t.down_until)
            self._set(t, False, reason, "passive")

    def _hold_ejection(self, t: Target) -> str:
        """Why ``t`` must stay in service despite its failures ("" when it may go)."""
        members = 0
        healthy = 0
        ejected = 0
        for o in self._targets():
            if o.weight <= 0 or o.draining:
                continue
            members += 1
            if o.healthy:
                healthy += 1
            elif o.down_reason == "passive":
                ejected += 1
        if healthy <= 1:
            return "last healthy target"
        pct = self._max_eject_pct
        limit = max(1, int(members * pct / 100.0)) if pct > 0 else 0
        if ejected + 1 > limit:
            return "max_ejection_percent"
        return ""

    def tick(self, now: float) -> None:
        p = self.cfg.passive
        if p is None or now < self.next_recovery:
            return
        nxt = float("inf")
        for t in self._targets():
            if t.healthy or t.down_reason != "passive":
                continue
            if t.down_until <= now:
                t.fails = p.unhealthy_after - 1
                self._set(t, True, "trial")
            else:
                nxt = min(nxt, t.down_until)
        self.next_recovery = nxt

    def retry_in(self, t: Target, now: float) -> float:
        """Seconds until an unhealthy ``t`` may be back (best guess)."""
        a = self.cfg.active
        if a is not None:
            return a.interval * max(1, a.healthy_after - t.oks)
        return max(0.0, t.down_until - now)

    # --- active ----------------------------------------------------------------------------
    async def _http_probe(self, t: Target) -> bool:
        from portway.http.client import simple_request

        a = self.cfg.active
        assert a is not None
        try:
            r = await simple_request(
                "GET",
                t.url + a.path,
                headers=[("user-agent", "portway-health-check")],
                timeout=a.timeout,
                # the upstream's TLS settings (CA, SNI name, client certificate)
                ssl=getattr(t.pool, "_ssl", None),
            )
        except (OSError, TimeoutError, ValueError) as e:
            log.debug("probe of %s failed: %r", t.id, e)
            return False
        return r.status in a.expect_status

    async def probe_once(self, t: Target) -> None:
        a = self.cfg.active
        assert a is not None
        try:
            async with asyncio.timeout(a.timeout + 0.5):
                ok = await self._probe(t)
        except TimeoutError:
            ok = False
        except Exception:
            # a probe bug must not kill the loop; count it as a failed probe
            log.exception("health probe of %s raised", t.id)
            ok = False
        if ok:
            t.probe_fails = 0
            t.oks += 1
            if not t.healthy and t.oks >= a.healthy_after:
                t.fails = 0
                self._set(t, True, "active")
        else:
            t.oks = 0
            t.probe_fails += 1
            if t.healthy and t.probe_fails >= a.unhealthy_after:
                self._set(t, False, "active", "active")

    async def _loop(self) -> None:
        a = self.cfg.active
        assert a is not None
        # spread workers and upstreams over the interval so probes do not arrive in bursts
        await asyncio.sleep(random.uniform(0, min(a.interval, 0.1)))
        while True:
            started = self._clock()
            targets = list(self._targets())
            if targets:
                await asyncio.gather(*(self.probe_once(t) for t in targets))
            await asyncio.sleep(max(0.0, a.interval - (self._clock() - started)))

    def start(self) -> None:
        if self.cfg.active is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        close = getattr(self._probe, "close", None)  # a probe with connections of its own
        if callable(close):
            close()

    # --- transitions -----------------------------------------------------------------------
    def _set(self, t: Target, healthy: bool, reason: str, kind: str = "") -> None:
        if t.healthy == healthy:
            return
        t.healthy = healthy
        t.down_reason = "" if healthy else kind
        self._on_change(t, healthy, reason)
