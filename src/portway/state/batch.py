"""Script batching: the EVALSHA calls of concurrent requests share one Redis round trip.

A gateway under load decides many requests per event-loop pass (rate limits, quotas,
concurrency leases); sent one by one, each pays a full round trip and redis-py's per-command
connection checkout. :class:`ScriptBatcher` queues the calls and one flusher task sends
everything queued as a single non-transactional pipeline: the calls of one loop pass go out
together, and while a batch is in flight the next one gathers, so the batch size follows the
load (one call alone at low load: no added wait). Each script still runs atomically on the
server and in submission order, so decisions are exactly those of unbatched calls.

No task is created per call: a call is a future on the queue; the flusher task lives while
the queue is non-empty (one per busy period).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from portway.state.base import LuaScript, ScriptArg, StoreUnavailableError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

_Call = tuple[LuaScript, Sequence[str], Sequence[ScriptArg], "asyncio.Future[Any]"]

#: calls per pipeline; a larger queue is sent in several round trips
MAX_BATCH = 256


class ScriptBatcher:
    """Queues script calls and sends them as pipelines; see the module docstring.

    ``on_failure(exc)`` is called once per failed round trip (the store's backoff), and
    ``on_success()`` once per answered one. Every failure reaches the caller as
    :class:`StoreUnavailableError`. ``round_trips`` counts pipelines sent (for tests and
    benchmarks).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        errors: tuple[type[BaseException], ...],
        *,
        describe: Callable[[], str],
        on_failure: Callable[[BaseException], Any],
        on_success: Callable[[], None],
        max_batch: int = MAX_BATCH,
    ) -> None:
        from redis.exceptions import NoScriptError

        self._client = client
        self._errors = errors
        self._no_script = NoScriptError
        self._describe = describe
        self._on_failure = on_failure
        self._on_success = on_success
        self._max = max_batch
        self._queue: list[_Call] = []
        self._task: asyncio.Task[None] | None = None
        self.round_trips = 0
        self.calls = 0

    def submit(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> asyncio.Future[Any]:
        """Queue one call; the future resolves to its reply."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, fut))
        if self._task is None:
            # the task first runs on the next loop pass: every call of this pass joins it
            self._task = loop.create_task(self._flush())
        return fut

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max]
                del self._queue[: self._max]
                await self._send(batch)
        finally:
            self._task = None
            # cancelled (shutdown) with calls still queued: nobody will send them
            for *_, fut in self._queue:
                if not fut.done():
                    fut.set_exception(StoreUnavailableError("redis batch cancelled"))
            self._queue.clear()

    async def _send(self, batch: list[_Call]) -> None:
        live = [c for c in batch if not c[3].done()]  # callers gone (cancelled) send nothing
        if not live:
            return
        self.round_trips += 1
        self.calls += len(live)
        try:
            replies = await self._pipeline([(s.sha, k, a, False) for s, k, a, _ in live])
            # the server lost its script cache (restart, failover): EVAL runs those scripts
            # in one more round trip and caches them for the next EVALSHA
            missing = [i for i, r in enumerate(replies) if isinstance(r, self._no_script)]
            if missing:
                self.round_trips += 1
                again = await self._pipeline(
                    [(live[i][0].source, live[i][1], live[i][2], True) for i in missing]
                )
                for i, r in zip(missing, again, strict=True):
                    replies[i] = r
        except self._errors as e:
            with contextlib.suppress(*self._errors):
                await self._on_failure(e)
            err = StoreUnavailableError(f"redis at {self._describe()}: {e}")
            for *_, fut in live:
                if not fut.done():
                    fut.set_exception(err)
            return
        except BaseException as e:
            for *_, fut in live:
                if not fut.done():
                    fut.set_exception(StoreUnavailableError(f"redis batch failed: {e!r}"))
            raise
        self._on_success()
        for (*_, fut), r in zip(live, replies, strict=True):
            if fut.done():
                continue
            if isinstance(r, BaseException):
                # a script error answers this call only; the server itself is fine
                err = StoreUnavailableError(f"redis at {self._describe()}: {r}")
                err.__cause__ = r
                fut.set_exception(err)
            else:
                fut.set_result(r)

    async def _pipeline(
        self, calls: list[tuple[str, Sequence[str], Sequence[ScriptArg], bool]]
    ) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for body, keys, args, is_source in calls:
            if is_source:
                pipe.eval(body, len(keys), *keys, *args)
            else:
                pipe.evalsha(body, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
