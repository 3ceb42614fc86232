"""A request hook's outcome that comes later, delivered by a plain callback.

A :class:`~portway.pipeline.runner.SyncHooks` ``request`` whose outcome needs I/O (a Redis
rate-limit decision) returns a :class:`Pending` instead of raising
:class:`~portway.pipeline.suspend.HookSuspended`: no coroutine, no exception, no future per
request. Whoever does the I/O calls :meth:`Pending.finish` exactly once, from its own
callback (the Redis connection's ``data_received``); the waiter set :attr:`Pending.on_done`
before control went back to the event loop:

- the task-free path parks the request (``proxy/fast.py`` ``Parked``) and carries on from
  ``on_done`` (``Chain.continue_pending``);
- a task awaits it with :func:`wait` (the general path: the plugin's ``on_request``).

Compiled with mypyc (setup.py ``HOT_MODULES``): a compiled base for the compiled hooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from portway.http.models import Response


class Pending:
    """The outcome of one request hook, still to come: ``response`` (None: go on) or
    ``error`` (raised where the hook would have raised it). ``index`` is the hook's position
    in the chain's ``on_request`` list (set by the runner)."""

    def __init__(self) -> None:
        self.index = -1
        self.done = False
        self.response: Response | None = None
        self.error: Exception | None = None
        #: called once with this object when it finishes (None: nobody waits any more)
        self.on_done: Callable[[Pending], None] | None = None

    def finish(self, response: Response | None, error: Exception | None) -> None:
        """Set the outcome and call ``on_done`` (once; a second call is ignored)."""
        if self.done:
            return
        self.done = True
        self.response = response
        self.error = error
        cb = self.on_done
        if cb is not None:
            self.on_done = None
            cb(self)

    def outcome(self) -> Response | None:
        """The hook's result: its response (or None), or its error raised."""
        err = self.error
        if err is not None:
            raise err
        return self.response


async def wait(p: Pending) -> Response | None:
    """Await ``p`` inside a task and return its outcome (raise its error). A cancelled wait
    drops the outcome (what was decided stands, as for a cancelled coroutine hook)."""
    if not p.done:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        p.on_done = _Wake(fut).wake
        try:
            await fut
        finally:
            p.on_done = None
    return p.outcome()


class _Wake:
    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut

    def wake(self, p: Pending) -> None:
        if not self.fut.done():
            self.fut.set_result(None)
