"""Write-side flow control shared by the server and client protocols."""

from __future__ import annotations

import asyncio


class WriteFlow(asyncio.Protocol):
    """Turns ``pause_writing``/``resume_writing`` into an awaitable :meth:`drain`.

    Subclasses set ``self._can_write = None`` in ``__init__``; the transport calls
    ``pause_writing`` above its high-water mark and ``resume_writing`` below the low one.
    """

    _can_write: asyncio.Future[None] | None

    def pause_writing(self) -> None:
        if self._can_write is None:
            self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        w = self._can_write
        self._can_write = None
        if w is not None and not w.done():
            w.set_result(None)

    async def drain(self) -> None:
        """Return once the transport accepts more data (immediately when not paused)."""
        w = self._can_write
        if w is not None:
            await w
