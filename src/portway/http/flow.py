"""Write-side flow control shared by the server and client protocols."""

from __future__ import annotations

import asyncio
from typing import cast

#: write-buffer watermarks for client and upstream transports (pause_writing above HIGH)
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


def adopt_transport(transport: asyncio.BaseTransport) -> tuple[asyncio.Transport, str, int, int]:
    """Set the write watermarks on a new client transport and return it with
    ``(peer ip, peer port, local port)`` (empty/0 where the socket has no address)."""
    t = cast(asyncio.Transport, transport)
    t.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
    peer = t.get_extra_info("peername")
    local = t.get_extra_info("sockname")
    peer_ip, peer_port = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
    return t, peer_ip, peer_port, int(local[1]) if isinstance(local, tuple) else 0


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
