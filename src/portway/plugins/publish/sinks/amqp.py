"""AMQP 0-9-1 sink (aio-pika, RabbitMQ): persistent messages on a channel in publisher
confirm mode, so a batch counts as sent only once the broker confirmed every message.

Messages are published ``mandatory``: one that no queue takes (a routing key with no
binding) comes back as an error, which is retried like an outage rather than silently
lost. With the default exchange (``exchange: ""``) and ``declare: true``, each queue is
declared durable the first time its name is used on a connection. On any failure the
connection is dropped and the next try opens a new one (the publisher's backoff paces it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from portway.plugins.publish.sinks.base import EventSink, Item, SinkError


class AmqpSink(EventSink):
    kind = "amqp"

    def __init__(self, url: str, exchange: str, declare: bool, timeout: float) -> None:
        self.url = url
        self.exchange_name = exchange
        self.declare = declare and exchange == ""
        self.timeout = timeout
        self._conn: Any = None
        self._exchange: Any = None
        self._declared: set[str] = set()

    async def _connect(self) -> Any:
        if self._conn is not None and not self._conn.is_closed and self._exchange is not None:
            return self._exchange
        await self._reset()
        import aio_pika

        try:
            conn = await aio_pika.connect(self.url, timeout=self.timeout)
            channel = await conn.channel(publisher_confirms=True)
            if self.exchange_name:
                exchange = await channel.get_exchange(self.exchange_name, ensure=True)
            else:
                exchange = channel.default_exchange
        except Exception as e:
            raise SinkError(f"amqp: cannot connect/open channel: {type(e).__name__}: {e}") from e
        self._conn = conn
        self._channel = channel
        self._exchange = exchange
        self._declared.clear()
        return exchange

    async def send(self, batch: Sequence[Item]) -> None:
        import aio_pika

        exchange = await self._connect()
        try:
            if self.declare:
                for key in {k for k, _, _ in batch} - self._declared:
                    await self._channel.declare_queue(key, durable=True)
                    self._declared.add(key)
            pubs = [
                exchange.publish(
                    aio_pika.Message(
                        payload,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=mid,
                    ),
                    routing_key=key,
                    mandatory=True,
                    timeout=self.timeout,
                )
                for key, payload, mid in batch
            ]
            results = await asyncio.gather(*pubs, return_exceptions=True)
        except Exception as e:
            await self._reset()
            raise SinkError(f"amqp: {type(e).__name__}: {e}") from e
        for k, r in enumerate(results):
            if isinstance(r, BaseException):
                await self._reset()
                raise SinkError(f"amqp: publish not confirmed: {type(r).__name__}: {r}", k)

    async def _reset(self) -> None:
        conn, self._conn, self._exchange = self._conn, None, None
        if conn is not None and not conn.is_closed:
            # a broken connection: nothing left to close cleanly
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.timeout)

    async def aclose(self) -> None:
        await self._reset()
