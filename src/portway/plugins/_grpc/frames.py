"""gRPC length-prefixed messages: 1 flag byte (bit 0 compressed, bit 7 gRPC-Web trailers),
a 4-byte big-endian length, the message bytes."""

from __future__ import annotations

from typing import Final

#: gRPC-Web: the frame carries the trailers, not a message
TRAILER_FLAG: Final = 0x80
COMPRESSED_FLAG: Final = 0x01


def frame(message: bytes, flags: int = 0) -> bytes:
    return bytes([flags]) + len(message).to_bytes(4, "big") + message


class FrameError(ValueError):
    """Malformed framing (truncated, or a message longer than the limit)."""


class FrameReader:
    """Incremental parser: ``feed(bytes)`` returns the complete ``(flags, message)`` frames
    so far; ``pending`` is True when bytes of an unfinished frame are buffered."""

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 5:
            n = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if n > self.limit:
                raise FrameError(f"gRPC message of {n} bytes exceeds the {self.limit} limit")
            if len(buf) - pos - 5 < n:
                break
            out.append((buf[pos], bytes(buf[pos + 5 : pos + 5 + n])))
            pos += 5 + n
        del buf[:pos]
        return out

    @property
    def pending(self) -> bool:
        return bool(self._buf)
