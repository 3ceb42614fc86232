"""Limiters: apply a set of limits to a key, locally (exact in-process) or in Redis (exact
across processes and nodes), always all-or-nothing across the limits."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Sequence
from typing import Any

from portway.plugins._ratelimit.algorithms import INF
from portway.plugins._ratelimit.local import Decision, LimitSpec, LocalLimiter
from portway.plugins._ratelimit.lua import RATE_LIMIT, RATE_LIMIT_GCRA1
from portway.state.base import PackedScriptingStore, ScriptingStore

__all__ = ["Decision", "LimitSpec", "LocalLimiter", "RedisLimiter", "hash_tag"]


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
    """Exact limiting across processes and nodes: one EVALSHA per decision (``script``:
    :data:`~.lua.RATE_LIMIT`, or its straight-line copy for one ``gcra`` limit).

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
        #: one gcra limit (the usual binding) runs the straight-line script: same layout
        self.script = (
            RATE_LIMIT_GCRA1 if algorithm == "gcra" and len(self.limits) == 1 else RATE_LIMIT
        )
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

    def packing(self) -> Any:
        """The constant parts of a packed call, for the compiled decision path
        (``redis_hooks.Packing``), or None when the store does not take packed calls."""
        pipe = getattr(self._packed_store, "pipe", None) if self._packed else None
        if pipe is None:
            return None
        from portway.plugins._ratelimit.redis_hooks import Packing

        return Packing(
            pipe,
            self.script,
            self._nparams,
            self._numkeys,
            self._prefix,
            self._scope,
            self._suffixes,
            self._after_keys,
            self._algo,
            self._tail,
            hash_tag,
        )

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
        return store.eval_packed(self.script, self._nparams, self._numkeys + keys + after)

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
            reply = await self.store.eval_script(self.script, self.keys_for(key), args)
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
