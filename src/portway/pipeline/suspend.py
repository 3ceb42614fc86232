"""A ``sync_hooks`` hook that suspended after all: carried on in a task, never run twice.

The task-free path drives ``sync_hooks`` plugins' ``on_request`` with ``coroutine.send(None)``
from inside the client parser's callback (``runner.drive``). A hook that awaits real I/O
there (a Redis call a store made, a timer) yields instead of finishing. Rather than failing
the request, :class:`HookSuspended` carries the half-run coroutine and what it yielded to the
connection's worker task, which :func:`finish` resumes as if it had awaited it from the
start — the hook runs once, its side effects are kept, the rest of the chain follows.

Interpreted on purpose: the exception subclasses a built-in (mypyc cannot compile that), and
:class:`_Yield` is a generator-based awaitable.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class HookSuspended(Exception):
    """``coro`` (a plugin hook) suspended on ``yielded``; ``index`` is its position in the
    chain's ``on_request`` list (set by the runner)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        super().__init__("a sync_hooks plugin hook suspended")
        self.coro = coro
        self.yielded = yielded
        self.index = -1

    def close(self) -> None:
        """Abandon the hook (its request will not be served)."""
        self.coro.close()


class _Yield:
    """Yields ``value`` once to the running task and returns what the task sends back."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self.value)


async def finish(s: HookSuspended) -> Any:
    """Run the suspended hook to its end inside the current task; return its result (or
    raise its exception). What it yielded (a future, or ``None`` for a bare yield) is handed
    to the task as if the hook had yielded it there; cancellation is thrown into the hook."""
    coro = s.coro
    pending = s.yielded
    while True:
        try:
            sent = await _Yield(pending)
        except BaseException as e:  # cancellation (or anything thrown in): the hook decides
            try:
                pending = coro.throw(e)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            pending = coro.send(sent)
        except StopIteration as stop:
            return stop.value
