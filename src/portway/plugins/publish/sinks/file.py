"""File sink: JSON lines appended to ``path`` by a worker thread (a slow disk never stalls
the event loop). The file is opened per batch, so a logrotate rename is followed without
a signal."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from portway.plugins.publish.sinks.base import EventSink, Item, SinkError


class FileSink(EventSink):
    kind = "file"

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, data: bytes) -> None:
        with open(self.path, "ab") as fh:
            fh.write(data)

    async def send(self, batch: Sequence[Item]) -> None:
        data = b"".join(p + b"\n" for _, p, _ in batch)
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as e:
            raise SinkError(f"file: {self.path}: {e}") from e
