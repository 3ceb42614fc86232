"""Streaming encoders for ``compression``: one per response, flushed after every chunk."""

from __future__ import annotations

import zlib
from typing import Final, Literal

import brotli  # type: ignore[import-untyped]
import zstandard

Algorithm = Literal["zstd", "br", "gzip"]
Level = Literal["fastest", "default", "best"]

#: named levels per algorithm. brotli's own default (11) is meant for static files: far too
#: slow for responses made per request, so "default" is 4 as in most servers' dynamic setting
LEVELS: Final[dict[str, dict[str, int]]] = {
    "gzip": {"fastest": 1, "default": 6, "best": 9},
    "br": {"fastest": 1, "default": 4, "best": 11},
    "zstd": {"fastest": 1, "default": 3, "best": 19},
}
#: brotli window: 2^19 = 512 KiB per stream in flight instead of the 4 MiB default
_BR_LGWIN: Final = 19


class Encoder:
    """Compresses one response body: ``chunk`` returns everything the bytes so far can be
    decoded to (a flushed block, so a streamed response never waits on the compressor),
    ``finish`` the end of the stream."""

    def chunk(self, data: bytes) -> bytes:
        raise NotImplementedError

    def finish(self, data: bytes) -> bytes:
        raise NotImplementedError


class GzipEncoder(Encoder):
    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 16+15: gzip container

    def chunk(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_FINISH)


class BrotliEncoder(Encoder):
    def __init__(self, level: int) -> None:
        self._b = brotli.Compressor(quality=level, lgwin=_BR_LGWIN)

    def chunk(self, data: bytes) -> bytes:
        out: bytes = self._b.process(data) + self._b.flush()
        return out

    def finish(self, data: bytes) -> bytes:
        out: bytes = self._b.process(data) + self._b.finish()
        return out


class ZstdEncoder(Encoder):
    def __init__(self, compressor: zstandard.ZstdCompressor) -> None:
        self._z = compressor.compressobj()

    def chunk(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class EncoderFactory:
    """Builds encoders of one algorithm at one level (zstd's parameters are prepared once)."""

    def __init__(self, algorithm: Algorithm, level: Level | int) -> None:
        self.algorithm = algorithm
        self.level = level if isinstance(level, int) else LEVELS[algorithm][level]
        self._zstd = zstandard.ZstdCompressor(level=self.level) if algorithm == "zstd" else None

    def new(self) -> Encoder:
        if self._zstd is not None:
            return ZstdEncoder(self._zstd)
        if self.algorithm == "br":
            return BrotliEncoder(self.level)
        return GzipEncoder(self.level)
