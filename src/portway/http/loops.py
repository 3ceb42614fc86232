"""Per-event-loop singletons (the timeout sweeper, the write batch)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``per_loop(loop)`` is one ``T`` per event loop, made by ``factory(loop)`` on first
    use and dropped with the loop."""

    def __init__(self, factory: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._factory = factory
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, loop: asyncio.AbstractEventLoop) -> T:
        item = self._items.get(loop)
        if item is None:
            item = self._items[loop] = self._factory(loop)
        return item
