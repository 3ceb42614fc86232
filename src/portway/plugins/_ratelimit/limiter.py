"""Limiters: apply a set of limits to a key, locally (exact in-process) or in Redis (exact
across processes and nodes), always all-or-nothing across the limits."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from portway.plugins._ratelimit.algorithms import ALGORITHMS, INF, State
from portway.plugins._ratelimit.lua import RATE_LIMIT
from portway.state.base import PackedScriptingStore, ScriptingStore


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit: ``rate`` units per ``per`` seconds, ``burst`` units of capacity.

    ``name`` is the policy name in the ``RateLimit`` headers; ``window`` the whole seconds
    advertised as the policy window.
    """

    name: str
    rate: float
    per: float
    burst: float

    @property
    def window(self) -> int:
        return max(1, math.ceil(self.per))

    def scaled(self, instances: int) -> LimitSpec:
        """This limit divided between ``instances`` processes (at least one unit each)."""
        if instances <= 1:
            return self
        return LimitSpec(
            self.name,
            max(1e-9, self.rate / instances),
            self.per,
            max(1.0, self.burst / instances),
        )


class Decision:
    """Outcome of one request against all its limits.

    ``remaining``/``reset`` are per limit (units, seconds); ``retry_after`` is seconds until
    the request would be admitted (0 when allowed, ``inf`` when its cost can never fit).
    """

    __slots__ = ("allowed", "remaining", "reset", "retry_after")

    def __init__(
        self,
        allowed: bool,
        remaining: Sequence[float],
        reset: Sequence[float],
        retry_after: float,
    ) -> None:
        self.allowed = allowed
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, remaining={list(self.remaining)}, "
            f"reset={list(self.reset)}, retry_after={self.retry_after})"
        )


class LocalLimiter:
    """Exact limiting within one process; state in a dict keyed by the request key.

    Memory is bounded: entries whose state has returned to "fresh" are swept periodically, and
    past ``max_keys`` the oldest entries are evicted (which forgets their usage: a key flood
    degrades towards admitting, never towards rejecting legitimate clients).
    """

    _SWEEP_EVERY = 4096

    def __init__(
        self,
        algorithm: str,
        limits: Sequence[LimitSpec],
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._step = ALGORITHMS[algorithm]
        self.limits = tuple(limits)
        self._params = tuple((lim.rate, lim.per, lim.burst) for lim in self.limits)
        self._single = self._params[0] if len(self._params) == 1 else None
        self._clock = clock
        self._max_keys = max_keys
        # key -> (expires, states per limit)
        self._entries: dict[str, tuple[float, list[State | None]]] = {}
        self._ops = 0

    def __len__(self) -> int:
        return len(self._entries)

    def decide(self, key: str, cost: float) -> Decision:
        now = self._clock()
        entries = self._entries
        entry = entries.get(key)
        states: list[State | None]
        if entry is None:
            # sweeping is amortised over new keys only: a hot key pays nothing for it
            self._ops += 1
            if self._ops >= self._SWEEP_EVERY or len(entries) >= self._max_keys:
                self._sweep(now)
            states = [None] * len(self._params)
        else:
            states = entry[1]
        step = self._step
        single = self._single
        if single is not None:
            ok, new, rem, reset, retry, expires = step(states[0], *single, now, cost)
            if ok:
                entries[key] = (expires, [new])
            return Decision(ok, (rem,), (reset,), retry)
        allowed = True
        rems: list[float] = []
        resets: list[float] = []
        news: list[State | None] = []
        retry_after = 0.0
        max_exp = 0.0
        for i, (rate, per, burst) in enumerate(self._params):
            ok, new, rem, reset, retry, expires = step(states[i], rate, per, burst, now, cost)
            rems.append(rem)
            resets.append(reset)
            news.append(new)
            if not ok:
                allowed = False
                retry_after = max(retry_after, retry)
            elif expires > max_exp:
                max_exp = expires
        if allowed:
            self._entries[key] = (max_exp, news)
        else:
            # nothing was consumed: limits that would have admitted report what is left
            rems = [r + cost if n is not None else r for r, n in zip(rems, news, strict=True)]
        return Decision(allowed, rems, resets, retry_after)

    def _sweep(self, now: float) -> None:
        self._ops = 0
        entries = self._entries
        dead = [k for k, (exp, _) in entries.items() if exp <= now]
        for k in dead:
            del entries[k]
        excess = len(entries) - self._max_keys
        if excess > 0:
            # dicts iterate in insertion order: the first keys are the least recently created
            for k in list(entries)[:excess]:
                del entries[k]


def hash_tag(scope: str, key: str) -> str:
    """Content of the ``{...}`` Redis Cluster hash tag for a limited key.

    Short, brace-free keys stay readable; anything else is hashed so a client-chosen value
    (e.g. a header) can neither break the tag nor grow keys without bound.
    """
    raw = f"{scope}|{key}"
    if len(raw) <= 120 and "{" not in raw and "}" not in raw:
        return raw
    digest = hashlib.blake2b(raw.encode("utf-8", "surrogateescape"), digest_size=16)
    return "h:" + digest.hexdigest()


class RedisLimiter:
    """Exact limiting across processes and nodes: one EVALSHA per decision.

    Keys are ``<prefix>{<scope>|<key>}:<algorithm>:<rate>/<per>`` per limit; changing a limit
    therefore starts it from fresh rather than misreading another limit's state. Raises
    :class:`~portway.state.base.StoreUnavailableError` when Redis cannot decide.
    """

    def __init__(
        self,
        store: ScriptingStore,
        algorithm: str,
        limits: Sequence[LimitSpec],
        *,
        key_prefix: str = "portway:rl:",
        scope: str = "*",
    ) -> None:
        self.store = store
        self.algorithm = algorithm
        self.limits = tuple(limits)
        self._prefix = key_prefix
        self._scope = scope
        self._suffixes = tuple(f"}}:{algorithm}:{lim.rate:g}/{lim.per:g}" for lim in self.limits)
        # arguments as bytes: redis-py's encoder passes bytes through untouched, and encoding
        # ten arguments per call was the largest part of a decision's CPU
        self._algo = algorithm.encode()
        self._args: list[bytes] = []
        for lim in self.limits:
            self._args += [repr(x).encode() for x in (lim.rate, lim.per * 1e6, lim.burst)]
        # the usual costs, rendered once (Lua's tonumber reads "1" and "1.0" alike)
        self._costs: dict[float, bytes] = {c: repr(c).encode() for c in range(0, 9)}
        # a store on one plain server takes the call pre-encoded (state/resp.py): only the
        # keys and the cost are rendered per decision, the rest of the command once here
        self._packed_store = store if isinstance(store, PackedScriptingStore) else None
        self._packed = self._packed_store is not None and self._packed_store.packs
        if self._packed:
            from portway.state.resp import bulk

            n = len(self.limits)
            self._nparams = 1 + n + 3 + len(self._args)
            self._numkeys = bulk(n)
            tail = b"".join(bulk(a) for a in self._args)
            self._after_keys: dict[float, bytes] = {
                c: bulk(self._algo) + bulk(b) + bulk(b"") + tail for c, b in self._costs.items()
            }
            self._tail = tail
            self._bulk = bulk

    def _submit_packed(self, key: str, cost: float, now_us: float | None) -> Awaitable[Any]:
        head = (self._prefix + "{" + hash_tag(self._scope, key)).encode()
        bulk = self._bulk
        after = self._after_keys.get(cost) if now_us is None else None
        if after is None:
            cost_b = self._costs.get(cost) or repr(cost).encode()
            now_b = b"" if now_us is None else repr(now_us).encode()
            after = bulk(self._algo) + bulk(cost_b) + bulk(now_b) + self._tail
        keys = b"".join([bulk(head + s.encode()) for s in self._suffixes])
        store = self._packed_store
        assert store is not None
        return store.eval_packed(RATE_LIMIT, self._nparams, self._numkeys + keys + after)

    def keys_for(self, key: str) -> list[str]:
        head = self._prefix + "{" + hash_tag(self._scope, key)
        return [head + s for s in self._suffixes]

    async def decide(self, key: str, cost: float, *, now_us: float | None = None) -> Decision:
        if self._packed:
            reply = await self._submit_packed(key, cost, now_us)
        else:
            cost_b = self._costs.get(cost)
            args: list[bytes] = [
                self._algo,
                cost_b if cost_b is not None else repr(cost).encode(),
                b"" if now_us is None else repr(now_us).encode(),
                *self._args,
            ]
            reply = await self.store.eval_script(RATE_LIMIT, self.keys_for(key), args)
        allowed = int(reply[0]) == 1
        n = len(self.limits)
        rems = [float(reply[1 + 3 * i]) for i in range(n)]
        resets = [int(reply[2 + 3 * i]) / 1000.0 for i in range(n)]
        retry_after = 0.0
        if not allowed:
            for i in range(n):
                r = int(reply[3 + 3 * i])
                retry_after = max(retry_after, INF if r < 0 else r / 1000.0)
        return Decision(allowed, rems, resets, retry_after)
