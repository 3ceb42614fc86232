"""The per-request work of a Redis-limited ``rate_limit`` binding, as :class:`FieldHooks`.

On one plain Redis server (the store packs its calls: ``state/resp.py``) a decision is a
plain-callback path, no coroutine, exception or future per request:

- ``request`` renders the call (only the keys and the cost per request; the rest of the
  command was rendered once), hands it to the store's pipelined connection with a
  :class:`RedisDecision` as its reply waiter and returns that decision, a
  :class:`~portway.pipeline.pending.Pending`: the chain stops there;
- the connection writes every call of the event-loop pass in one write, parses the replies
  in ``data_received`` and calls each waiter's ``resolved`` (or ``failed``) in turn;
- ``resolved`` reads the reply into a :class:`Decision`, adds the report, and finishes the
  pending outcome (a rejection as its error); its ``on_done`` carries the request on: the
  parked request on the task-free path (``proxy/fast.py`` ``Parked.resume``), or the task
  awaiting it (``pending.wait``, the plugin's ``on_request`` on the general path).

A store that cannot fail over to this (TLS, Cluster, Sentinel: redis-py pipelines) runs the
plugin's decision coroutine (``runner.drive``), which suspends on the reply's future as before.
``response_fields`` renders the rate-limit fields as the local binding's hooks do, so a
Redis-limited route keeps the lite response head (``Chain.fields_only``).

Compiled with mypyc (setup.py ``HOT_MODULES``): :class:`FieldHooks` and :class:`Pending`
are compiled bases.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, Final

from portway.errors import UnavailableError
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.pending import Pending
from portway.pipeline.runner import FieldHooks, Replaces, drive
from portway.plugins._ratelimit.headers import FIELDS, Reporter, add_report, report_fields
from portway.plugins._ratelimit.hooks import rejection
from portway.plugins._ratelimit.keys import CostFn, KeyFn
from portway.plugins._ratelimit.local import Decision, LocalLimiter
from portway.state.base import LuaScript, StoreUnavailableError
from portway.state.resp import ScriptPipe

log: Final = logging.getLogger("portway.plugins.rate_limit")

Decide = Callable[[RequestContext], Coroutine[Any, Any, Response | None]]

#: how long a hash tag may be before it is hashed (``limiter.hash_tag``'s rule)
_TAG_MAX: Final = 120
#: rendered calls kept per binding (constant cost: one per key), cleared when full
_MEMO_MAX: Final = 4096


def _bulk(b: bytes) -> bytes:
    return b"$" + str(len(b)).encode() + b"\r\n" + b + b"\r\n"


class Packing:
    """What a :class:`~.limiter.RedisLimiter` renders once for a packed call (its EVALSHA's
    constant parts), copied here so a decision renders only its keys and its cost."""

    def __init__(
        self,
        pipe: ScriptPipe,
        script: LuaScript,
        nparams: int,
        numkeys: bytes,
        prefix: str,
        scope: str,
        suffixes: tuple[str, ...],
        after_keys: dict[float, bytes],
        algo: bytes,
        tail: bytes,
        hash_tag: Callable[[str, str], str],
    ) -> None:
        #: the store's pipelined connection (``RedisStore.pipe``: ``submit_to`` is its
        #: ``eval_packed_to``, the backoff asked first)
        self.pipe = pipe
        self.script = script
        self.nparams = nparams
        self.numkeys = numkeys
        self.prefix = prefix
        self.scope_bar = scope + "|"
        self.suffixes = [s.encode() for s in suffixes]
        self.after_keys = after_keys
        self.algo = algo
        self.tail = tail
        self.hash_tag = hash_tag
        self.scope = scope

    def params(self, key: str, cost: float) -> bytes:
        raw = self.scope_bar + key
        if len(raw) > _TAG_MAX or "{" in raw or "}" in raw:
            raw = self.hash_tag(self.scope, key)
        head = (self.prefix + "{" + raw).encode()
        parts = [self.numkeys]
        for s in self.suffixes:
            parts.append(_bulk(head + s))
        after = self.after_keys.get(cost)
        if after is None:
            c = repr(cost).encode() if cost != int(cost) else str(int(cost)).encode()
            after = _bulk(self.algo) + _bulk(c) + _bulk(b"") + self.tail
        parts.append(after)
        return b"".join(parts)


class RedisRateHooks(FieldHooks):
    """``request`` decides on Redis (see the module docstring); ``response_fields`` sets the
    report's fields. ``packing`` None: the store cannot take packed calls, ``decide`` (the
    plugin's coroutine) is driven instead.

    Keeps the binding's store-error state: the first failure is logged, and so is the
    recovery; under ``deny`` a failed decision is a 503, else the local limiter decides."""

    def __init__(
        self,
        decide: Decide,
        packing: Packing | None,
        local: LocalLimiter,
        key: KeyFn,
        cost: CostFn | None,
        const_cost: int,
        reporter: Reporter | None,
        capacity: float,
        source: str,
        nlimits: int,
        deny: bool,
        on_store_error: str,
    ) -> None:
        self.decide = decide
        self.packing = packing
        self.local = local
        self.key = key
        self.cost = cost
        self.const_cost = const_cost
        self.reporter = reporter
        self.capacity = capacity
        self.source = source
        self.nlimits = nlimits
        self.deny = deny
        self.on_store_error = on_store_error
        self.store_down = False
        #: key -> the call's parameters, for a constant cost (the usual binding)
        self.memo: dict[str, bytes] = {}

    def request(self, ctx: RequestContext) -> Response | Pending | None:
        packing = self.packing
        if packing is None:
            return drive(self.decide(ctx))
        cost_fn = self.cost
        key = self.key(ctx)
        if cost_fn is None:
            cost = self.const_cost
            memo = self.memo
            params = memo.get(key)
            if params is None:
                params = packing.params(key, cost)
                if len(memo) >= _MEMO_MAX:
                    memo.clear()
                memo[key] = params
        else:
            cost = cost_fn(ctx)
            params = packing.params(key, cost)
        pending = RedisDecision(self, ctx, key, cost)
        try:
            packing.pipe.submit_to(packing.script, packing.nparams, params, pending)
        except StoreUnavailableError as e:  # backing off: decided now, without Redis
            self.report(ctx, self.store_failed(e, key, cost))
            return None
        return pending

    # -- the decision's parts (shared with the plugin's coroutine path) ----------------------

    def parse(self, reply: Any) -> Decision:
        """The script's reply (``lua.py``: allowed, then remaining, reset ms and retry ms
        per limit) as a :class:`Decision`."""
        r: list[Any] = reply
        allowed = int(r[0]) == 1
        n = self.nlimits
        rems: list[float] = []
        resets: list[float] = []
        retry_after = 0.0
        for i in range(n):
            rems.append(float(r[1 + 3 * i]))
            resets.append(int(r[2 + 3 * i]) / 1000.0)
            if not allowed:
                ra = int(r[3 + 3 * i])
                retry_after = max(retry_after, math.inf if ra < 0 else ra / 1000.0)
        return Decision(allowed, rems, resets, retry_after)

    def report(self, ctx: RequestContext, d: Decision) -> None:
        """Add the decision's report; raise the 429 when it rejects."""
        reporter = self.reporter
        if reporter is not None:
            add_report(ctx, reporter, d)
        if not d.allowed:
            raise rejection(ctx, d, self.capacity, self.source)

    def store_ok(self) -> None:
        if self.store_down:
            self.store_down = False
            log.warning("rate_limit: store reachable again; exact limiting resumed")

    def store_failed(self, e: StoreUnavailableError, key: str, cost: float) -> Decision:
        """Redis could not decide: ``on_store_error`` applies (deny: raise the 503; allow:
        the local limiter's decision)."""
        if not self.store_down:
            self.store_down = True
            log.warning("rate_limit: %s; applying on_store_error=%s", e, self.on_store_error)
        if self.deny:
            raise UnavailableError(
                "rate limit store unavailable",
                headers=[("retry-after", "1")],
                source=self.source,
            ) from e
        return self.local.decide(key, cost)

    def replaces_names(self) -> frozenset[bytes] | None:
        return FIELDS

    def response_fields(
        self, ctx: RequestContext, out: list[tuple[bytes, bytes]]
    ) -> Replaces | None:
        return report_fields(ctx, out)


class RedisDecision(Pending):
    """One request's decision in flight: the pipe's reply waiter (``resolved``/``failed``)
    and the request hook's pending outcome."""

    def __init__(self, hooks: RedisRateHooks, ctx: RequestContext, key: str, cost: int) -> None:
        super().__init__()
        self.hooks = hooks
        self.ctx = ctx
        self.key = key
        self.cost = cost

    def resolved(self, reply: Any) -> None:
        hooks = self.hooks
        try:
            d = hooks.parse(reply)
            hooks.store_ok()
            hooks.report(self.ctx, d)
        except Exception as e:  # the 429 (or an unreadable reply: the chain reports it)
            self.finish(None, e)
            return
        self.finish(None, None)

    def failed(self, exc: StoreUnavailableError) -> None:
        hooks = self.hooks
        try:
            hooks.report(self.ctx, hooks.store_failed(exc, self.key, self.cost))
        except Exception as e:  # the 503 (deny) or the local limiter's 429
            self.finish(None, e)
            return
        self.finish(None, None)
