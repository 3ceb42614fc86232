"""Weighted split of a route's requests between upstreams (canary, blue/green).

- Per request (no ``sticky``, or no sticky key on the request): smooth weighted round robin
  (nginx's swrr) over weights in basis points. It is exact: over any run of
  ``sum(weights) / gcd`` requests each variant gets exactly its share, and after ``n``
  requests a variant's count is within one of ``n * percent / 100``.
- Sticky: the key (cookie, consumer, header or client IP) is hashed (BLAKE2b, so the same on
  every instance and across reloads) into one of 10 000 buckets; ``to`` entries own
  consecutive bucket ranges from 0 in config order, the route's own upstream the rest.
  Raising a variant's percent therefore only moves clients *onto* it.
- ``force`` rules come first: the first whose condition holds decides.

With ``sticky: cookie:NAME`` a request without the cookie gets a fresh random value, is
bucketed by it, and the response sets the cookie so the client stays on its variant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from portway.config.traffic import BUCKETS, SplitConfig
from portway.digest import blake2b, token_hex
from portway.pipeline.context import RequestContext
from portway.routing.conditions import CompiledCondition

if TYPE_CHECKING:
    from portway.runtime.graph import RouteRuntime

#: sticky cookies last 30 days (renewed whenever the gateway sets one)
COOKIE_MAX_AGE: Final = 30 * 24 * 3600


def bucket_of(key: bytes) -> int:
    """The sticky bucket (0..9999) of ``key``: stable across processes, reloads and hosts."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % BUCKETS


def cookie_value(req_cookie: bytes | None, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in a Cookie field value (``None`` when absent)."""
    if not req_cookie:
        return None
    for part in req_cookie.split(b";"):
        k, sep, v = part.strip().partition(b"=")
        if sep and k == name:
            return v.strip().strip(b'"') or None
    return None


class Arm:
    """One variant: its route runtime, weight (basis points) and label."""

    __slots__ = ("name", "rt", "weight")

    def __init__(self, name: str, rt: RouteRuntime, weight: int) -> None:
        self.name = name
        self.rt = rt
        self.weight = weight


class Splitter:
    """Chooses an :class:`Arm` per request; one per route per runtime graph (a reload
    starts a new round-robin cycle: weights may have changed)."""

    def __init__(
        self, cfg: SplitConfig, primary: Arm, variants: Callable[[str], RouteRuntime]
    ) -> None:
        self.arms: list[Arm] = [
            Arm(t.upstream, variants(t.upstream), round(t.percent * 100)) for t in cfg.to
        ]
        primary.weight = BUCKETS - sum(a.weight for a in self.arms)
        self.arms.append(primary)
        self.primary = primary
        live = [a for a in self.arms if a.weight > 0]
        g = math.gcd(*(a.weight for a in live)) if live else 1
        #: swrr state: only arms with a weight take part
        self._live = live
        self._w = [a.weight // g for a in live]
        self._total = sum(self._w)
        self._cur = [0] * len(live)
        #: (upper bucket bound, arm) in config order, for sticky keys
        self._ranges: list[tuple[int, Arm]] = []
        upper = 0
        for a in self.arms:
            upper += a.weight
            self._ranges.append((upper, a))
        self.force: list[tuple[CompiledCondition, Arm]] = []
        for rule in cfg.force:
            arm = next((a for a in self.arms if a.name == rule.upstream), None)
            if arm is None:
                arm = Arm(rule.upstream, variants(rule.upstream), 0)
            self.force.append((CompiledCondition(rule.when), arm))
        sticky = cfg.sticky or ""
        kind, _, name = sticky.partition(":")
        self.sticky_kind = kind
        self.sticky_name = name.lower().encode() if kind == "header" else name.encode()
        self.cookie = name if kind == "cookie" else None

    def next_arm(self) -> Arm:
        """Smooth weighted round robin: the arm with the highest running score, which then
        pays the total back."""
        cur = self._cur
        w = self._w
        best = 0
        for i in range(len(cur)):
            cur[i] += w[i]
            if cur[i] > cur[best]:
                best = i
        cur[best] -= self._total
        return self._live[best]

    def by_bucket(self, b: int) -> Arm:
        for upper, arm in self._ranges:
            if b < upper:
                return arm
        return self.primary

    def choose(self, ctx: RequestContext) -> tuple[Arm, str, str | None]:
        """``(arm, reason, cookie to set)``; reason ``force``, ``sticky`` or ``split``."""
        for cond, arm in self.force:
            if cond.holds(ctx):
                return arm, "force", None
        kind = self.sticky_kind
        if not kind:
            return self.next_arm(), "split", None
        key = self._sticky_key(ctx)
        new_cookie: str | None = None
        if key is None:
            if self.cookie is None:
                return self.next_arm(), "split", None
            new_cookie = token_hex(8)
            key = new_cookie.encode()
        return self.by_bucket(bucket_of(key)), "sticky", new_cookie

    def _sticky_key(self, ctx: RequestContext) -> bytes | None:
        kind = self.sticky_kind
        req = ctx.request
        if kind == "ip":
            return req.client_ip.encode()
        if kind == "consumer":
            c = ctx.consumer
            return None if c is None or c.anonymous else b"consumer:" + c.username.encode()
        if kind == "header":
            return req.headers.get_raw(self.sticky_name) or None
        return cookie_value(req.headers.get_raw(b"cookie"), self.sticky_name)

    def set_cookie(self, value: str) -> tuple[str, str]:
        assert self.cookie is not None
        return (
            "set-cookie",
            f"{self.cookie}={value}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Lax",
        )

    def describe(self) -> dict[str, Any]:
        return {
            "arms": [{"upstream": a.name, "percent": a.weight / 100} for a in self.arms],
            "sticky": f"{self.sticky_kind}:{self.sticky_name.decode()}".rstrip(":") or None,
        }
