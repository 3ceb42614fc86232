"""Redis Streams sink: one ``XADD`` per event (field ``event`` = the JSON), a batch sent as
one pipeline (no transaction, so on a Redis Cluster each stream key goes to its own node).

A pipeline that fails part-way may have appended some events: the retry sends the whole
batch again (at-least-once). ``stream_max_len`` trims with ``MAXLEN ~``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from portway.plugins.publish.sinks.base import EventSink, Item, SinkError


class RedisStreamSink(EventSink):
    kind = "redis_stream"

    def __init__(self, url: str, timeout: float, max_len: int | None) -> None:
        self.url = url
        self.timeout = timeout
        self.max_len = max_len
        self._client: Any = None

    def _get(self) -> Any:
        if self._client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            from portway.state.connect import redis_client

            self._client = redis_client(
                self.url,
                socket_connect_timeout=self.timeout,
                socket_timeout=self.timeout,
                # the publisher retries with its own backoff
                retry=Retry(NoBackoff(), 0),
            )
        return self._client

    async def send(self, batch: Sequence[Item]) -> None:
        client = self._get()
        try:
            pipe = client.pipeline(transaction=False)
            for stream, payload, _ in batch:
                pipe.xadd(
                    stream,
                    {"event": payload},
                    maxlen=self.max_len,
                    approximate=True,
                )
            await pipe.execute()
        except Exception as e:
            # drop pooled sockets to a server that went away; the next try reconnects
            await self._reset()
            raise SinkError(f"redis_stream: {type(e).__name__}: {e}") from e

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # the connection is already broken; nothing to release
            with contextlib.suppress(Exception):
                await client.aclose()

    async def aclose(self) -> None:
        await self._reset()
