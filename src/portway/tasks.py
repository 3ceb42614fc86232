"""Small asyncio helpers shared by background loops (watchers, probes, exporters)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished; never raises its cancel."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel every task given (``None`` and finished ones are skipped) and wait for each.

    For closing an object's background loops: what a task ended with — its cancel, or an
    error it died of earlier — is not raised here (the loop logged it when it happened)."""
    for t in tasks:
        if t is not None and not t.done():
            t.cancel()
    for t in tasks:
        if t is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
