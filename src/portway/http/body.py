"""Flow-controlled body streams.

A :class:`BodyStream` sits between a protocol that receives body bytes (``feed``) and a
coroutine that consumes them (``read``). When more than ``high`` bytes are buffered it calls
``pause()`` on its source (normally ``transport.pause_reading``) and calls ``resume()`` once the
consumer has drained it below ``low``: memory per stream is bounded whatever the body size.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from mypy_extensions import mypyc_attr

from portway.errors import PayloadTooLargeError
from portway.http.headers import Headers


@mypyc_attr(allow_interpreted_subclasses=True)
class BodyStream:
    """Single-consumer stream of body chunks. ``read()`` returns ``b""`` at the end."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_eof",
        "_exc",
        "_high",
        "_low",
        "_pause",
        "_paused",
        "_resume",
        "_waiter",
        "received",
        "trailers",
    )

    def __init__(
        self,
        pause: Callable[[], None] | None = None,
        resume: Callable[[], None] | None = None,
        *,
        high: int = 256 * 1024,
        low: int = 64 * 1024,
    ) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        self._paused = False
        self._high = high
        self._low = low
        #: total bytes fed so far
        self.received = 0
        #: trailer fields of a chunked message, set before EOF
        self.trailers: Headers | None = None

    @classmethod
    def of(cls, data: bytes) -> BodyStream:
        s = cls()
        if data:
            s.feed(data)
        s.feed_eof()
        return s

    # producer side --------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        n = len(chunk)
        self._buffered += n
        self.received += n
        if self._buffered > self._high and not self._paused and self._pause is not None:
            self._paused = True
            self._pause()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if not self._eof:
            self._exc = exc
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    @property
    def complete(self) -> bool:
        """The producer delivered the whole body (it may not all be consumed yet)."""
        return self._eof

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    @property
    def failed(self) -> bool:
        return self._exc is not None

    # consumer side --------------------------------------------------------------------------
    def _pop(self) -> bytes:
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= self._low and self._resume is not None:
            self._paused = False
            self._resume()
        return chunk

    async def read(self) -> bytes:
        while True:
            if self._chunks:
                return self._pop()
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def read_nowait(self) -> bytes | None:
        """A buffered chunk, ``b""`` at EOF, or ``None`` when the caller would have to wait."""
        if self._chunks:
            return self._pop()
        if self._exc is not None:
            raise self._exc
        return b"" if self._eof else None

    async def read_all(self, limit: int | None = None) -> bytes:
        """Buffer the rest of the body; raise 413 past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if limit is not None and size > limit:
                raise PayloadTooLargeError(f"body exceeds {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def drain(self) -> None:
        """Consume and discard the rest of the body."""
        while await self.read():
            pass
