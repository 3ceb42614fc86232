"""Load balancers.

Every balancer is built over an immutable snapshot: the targets that are members, healthy, not
draining and of weight > 0 (the :class:`~portway.upstream.upstream.Upstream` rebuilds it on any
membership or health change). At pick time a balancer still skips targets in ``exclude`` and
targets whose circuit breaker is open, since breakers change with time alone.

A balancer built with ``panic=True`` (too few healthy targets: see ``min_healthy_percent``)
is built over every member and ignores health flags, as Envoy's panic mode does; exclusions,
draining, weights and breakers still apply.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

from portway.digest import blake2b
from portway.pipeline.context import RequestContext
from portway.upstream.target import Target

Clock = Callable[[], float]

#: peak-EWMA decay time constant (Linkerd's and Finagle's default is 10 s)
EWMA_DECAY: Final = 10.0
#: load of a target with requests in flight but no latency sample yet: large, so a fresh
#: target is tried but not flooded (Linkerd's "penalty")
UNKNOWN_LATENCY_PENALTY: Final = 1.0
#: ring points per unit of weight for consistent hashing
VNODES: Final = 160
#: ring size cap; above it every target's point count is scaled down proportionally
MAX_RING_POINTS: Final = 100_000


class Balancer:
    """Chooses a target for a request (subclass it).

    ``pick`` returns a target from the snapshot that is not in ``exclude`` and whose breaker
    would let a request through, or ``None`` when there is none. It must not block. A base
    class, not a ``Protocol``, so that compiled code calls ``pick`` directly.
    """

    def pick(self, ctx: RequestContext, exclude: set[Target] | frozenset[Target]) -> Target | None:
        raise NotImplementedError


def usable(t: Target, exclude: set[Target] | frozenset[Target], panic: bool = False) -> bool:
    # health and draining are re-checked: a snapshot may be a moment older than the flags
    if t in exclude or (not t.healthy and not panic) or t.draining or t.weight <= 0:
        return False
    b = t.breaker
    return b is None or bool(b.available())


class RoundRobinBalancer(Balancer):
    """Plain rotation; weights other than 0 are ignored."""

    def __init__(self, targets: Sequence[Target], panic: bool = False) -> None:
        self._t = tuple(targets)
        self._panic = panic
        self._i = random.randrange(len(self._t)) if self._t else 0

    def pick(self, ctx: RequestContext, exclude: set[Target] | frozenset[Target]) -> Target | None:
        n = len(self._t)
        for _ in range(n):
            t = self._t[self._i % n]
            self._i = (self._i + 1) % n
            if usable(t, exclude, self._panic):
                return t
        return None


class WeightedRoundRobinBalancer(Balancer):
    """nginx's smooth weighted round robin: over any window of ``sum(weights)`` picks each
    target gets exactly its share, and picks of a heavy target are spread out rather than
    bunched (weights 5:1:1 give ``a a b a c a a``, not ``a a a a a b c``)."""

    def __init__(self, targets: Sequence[Target], panic: bool = False) -> None:
        self._t = tuple(targets)
        self._panic = panic
        self._w = [t.weight for t in self._t]
        self._cur = [0] * len(self._t)

    def pick(self, ctx: RequestContext, exclude: set[Target] | frozenset[Target]) -> Target | None:
        if len(self._t) == 1:
            t = self._t[0]  # one target: nothing to rotate
            return t if usable(t, exclude, self._panic) else None
        best = -1
        total = 0
        cur = self._cur
        for i, t in enumerate(self._t):
            if not usable(t, exclude, self._panic):
                continue
            w = self._w[i]
            cur[i] += w
            total += w
            if best < 0 or cur[i] > cur[best]:
                best = i
        if best < 0:
            return None
        cur[best] -= total
        return self._t[best]


class RandomBalancer(Balancer):
    """Weighted random choice."""

    def __init__(self, targets: Sequence[Target], panic: bool = False) -> None:
        self._t = tuple(targets)
        self._panic = panic
        acc = 0
        self._cum: list[int] = []
        for t in self._t:
            acc += t.weight
            self._cum.append(acc)
        self._total = acc

    def pick(self, ctx: RequestContext, exclude: set[Target] | frozenset[Target]) -> Target | None:
        if self._total <= 0:
            return None
        # a few blind draws first: almost always enough, and O(log n)
        for _ in range(3):
            t = self._t[bisect.bisect_right(self._cum, random.randrange(self._total))]
            if usable(t, exclude, self._panic):
                return t
        cands = [t for t in self._t if usable(t, exclude, self._panic)]
        if not cands:
            return None
        return random.choices(cands, weights=[t.weight for t in cands])[0]


class LeastConnectionsBalancer(Balancer):
    """Fewest ``in_flight / weight``; ties broken at random so equal targets share load."""

    def __init__(self, targets: Sequence[Target], panic: bool = False) -> None:
        self._t = tuple(targets)
        self._panic = panic

    def pick(self, ctx: RequestContext, exclude: set[Target] | frozenset[Target]) -> Target | None:
        best: list[Target] = []
        best_score = math.inf
        for t in self._t:
            if not usable(t, exclude, self._panic):
                continue
            score = t.in_flight / t.weight
            if score < best_score:
                best_score = score
                best = [t]
            elif score == best_score:
                best.append(t)
        if not best:
            return None
        return best[0] if len(best) == 1 else random.choice(best)


def peak_ewma_observe(t: Target, latency: float, now: float) -> None:
    """Fold one latency sample into ``t.ewma``: jump to peaks, decay exponentially in time."""
    if t.ewma == 0.0 or latency > t.ewma:
        t.ewma = latency
    else:
        w = math.exp(-max(0.0, now - t.ewma_stamp) / EWMA_DECAY)
        t.ewma = t.ewma * w + latency * (1.0 - w)
    t.ewma_stamp = now


def peak_ewma_load(t: Target, now: float) -> float:
    """Expected cost of sending one more request to ``t``: decayed peak-EWMA * (in_flight+1),
    divided by weight. A slow target's cost decays while it gets no traffic, so it is tried
    again eventually (as Finagle does)."""
    if t.ewma == 0.0:
        cost = UNKNOWN_LATENCY_PENALTY + t.in_flight if t.in_flight else 0.0
        return cost / t.weight
    cost = t.ewma * math.exp(-max(0.0, now - t.ewma_stamp) / EWMA_DECAY)
    return cost * (t.in_flight + 1) / t.weight


class LeastLatencyBalancer(Balancer):
    """Peak-EWMA with power of two choices (Finagle / Linkerd): draw two distinct usable
    targets at random and take the one with the lower :func:`peak_ewma_load`."""

    def __init__(
        self, targets: Sequence[Target], clock: Clock = time.monotonic, panic: bool = False
    ) -> None:
        self._t = tuple(targets)
        self._clock = clock
        self._panic = panic

    def pick(self, ctx: RequestContext, exclude: set[Target] | frozenset[Target]) -> Target | None:
        cands = [t for t in self._t if usable(t, exclude, self._panic)]
        n = len(cands)
        if n <= 1:
            return cands[0] if cands else None
        i = random.randrange(n)
        j = random.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = cands[i], cands[j]
        now = self._clock()
        return a if peak_ewma_load(a, now) <= peak_ewma_load(b, now) else b


def _h64(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def hash_key(ctx: RequestContext, hash_on: str) -> str | None:
    """The consistent-hash key of a request, or ``None`` when its source is absent."""
    req = ctx.request
    if hash_on == "ip":
        return req.client_ip or None
    if hash_on == "path":
        return req.path
    if hash_on == "consumer":
        c = ctx.consumer
        return c.id if c is not None and not c.anonymous else None
    kind, _, name = hash_on.partition(":")
    if kind == "header":
        return req.headers.get(name)
    if kind == "cookie":
        for raw in req.headers.get_all("cookie"):
            for part in raw.split(";"):
                k, eq, v = part.strip().partition("=")
                if eq and k == name:
                    return v.strip('"')
    return None


class ConsistentHashBalancer(Balancer):
    """Hash ring with ``VNODES * weight`` virtual nodes per target (ketama style).

    Removing one of N targets remaps only the keys that lived on it (about 1/N); an unusable
    target's keys walk clockwise to the next usable target, so they come back when it does.
    For that reason this ring is built over all members (healthy or not) and rebuilt only when
    membership changes. Requests without a key (missing header/cookie, anonymous consumer)
    fall back to the client IP, then to a random target.
    """

    def __init__(self, targets: Sequence[Target], hash_on: str, panic: bool = False) -> None:
        self._t = tuple(targets)
        self.hash_on = hash_on
        self._panic = panic
        total = VNODES * sum(t.weight for t in self._t)
        scale = min(1.0, MAX_RING_POINTS / total) if total else 1.0
        points: list[tuple[int, int]] = []
        for idx, t in enumerate(self._t):
            if t.weight <= 0:
                continue
            for v in range(max(1, round(VNODES * t.weight * scale))):
                points.append((_h64(f"{t.id}#{v}".encode()), idx))
        points.sort()
        self._keys = [p[0] for p in points]
        self._owner = [p[1] for p in points]
        self._n_owners = len(set(self._owner))

    def pick_key(self, key: str, exclude: set[Target] | frozenset[Target]) -> Target | None:
        n = len(self._keys)
        if n == 0:
            return None
        i = bisect.bisect_left(self._keys, _h64(key.encode("utf-8", "surrogatepass")))
        tried: set[int] = set()
        for step in range(n):
            owner = self._owner[(i + step) % n]
            if owner in tried:
                continue
            t = self._t[owner]
            if usable(t, exclude, self._panic):
                return t
            tried.add(owner)
            if len(tried) == self._n_owners:
                break
        return None

    def pick(self, ctx: RequestContext, exclude: set[Target] | frozenset[Target]) -> Target | None:
        key = hash_key(ctx, self.hash_on)
        if key is None:
            key = ctx.request.client_ip or None
        if key is None:
            cands = [t for t in self._t if usable(t, exclude, self._panic)]
            return random.choice(cands) if cands else None
        return self.pick_key(key, exclude)


def make_balancer(
    kind: str,
    targets: Sequence[Target],
    hash_on: str = "ip",
    clock: Clock = time.monotonic,
    panic: bool = False,
) -> Balancer:
    """Build the balancer named by ``UpstreamConfig.balancing`` over ``targets``: members of
    weight > 0 that are healthy and not draining (all members for ``consistent_hash``, and
    in panic mode)."""
    if kind == "round_robin":
        return RoundRobinBalancer(targets, panic)
    if kind == "weighted_round_robin":
        return WeightedRoundRobinBalancer(targets, panic)
    if kind == "least_connections":
        return LeastConnectionsBalancer(targets, panic)
    if kind == "least_latency":
        return LeastLatencyBalancer(targets, clock, panic)
    if kind == "consistent_hash":
        return ConsistentHashBalancer(targets, hash_on, panic)
    if kind == "random":
        return RandomBalancer(targets, panic)
    raise ValueError(f"unknown balancing {kind!r}")
