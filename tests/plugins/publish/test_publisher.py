"""The publisher's buffer and sender against an in-memory sink (pure logic): batching, the
full-buffer policies, partial deliveries and shutdown accounting."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from portway.plugins.publish.config import PublishConfig
from portway.plugins.publish.publisher import Publisher
from portway.plugins.publish.sinks.base import EventSink, Item, SinkError
from tests.plugins.publish.support import wait_for


class MemorySink(EventSink):
    kind = "file"

    def __init__(self) -> None:
        self.batches: list[list[str | None]] = []
        self.down = False
        #: when set, the next send delivers this many events and then fails
        self.partial: int | None = None
        self.calls = 0

    async def send(self, batch: Sequence[Item]) -> None:
        self.calls += 1
        if self.partial is not None:
            k, self.partial = self.partial, None
            self.batches.append([rid for _, _, rid in batch[:k]])
            raise SinkError("partial", k)
        if self.down:
            raise SinkError("down")
        self.batches.append([rid for _, _, rid in batch])


def _publisher(sink: MemorySink, **over: object) -> Publisher:
    cfg = PublishConfig.model_validate(
        {
            "sink": "file",
            "path": "/dev/null",
            "batch": {"max_events": 10, "max_wait": "10ms"},
            "retry": {"initial": "10ms", "max": "20ms", "timeout": "200ms"},
            **over,
        }
    )
    return Publisher(cfg, lambda: sink)


def _put(pub: Publisher, ids: range) -> None:
    for i in ids:
        pub.put("d", {"request_id": str(i)})


def _delivered(sink: MemorySink) -> list[str | None]:
    return [rid for b in sink.batches for rid in b]


async def test_batches_are_bounded_by_max_events() -> None:
    sink = MemorySink()
    pub = _publisher(sink)
    _put(pub, range(25))  # queued before the task runs
    pub.acquire()
    await wait_for(lambda: pub.sent == 25)
    assert [len(b) for b in sink.batches] == [10, 10, 5]
    assert _delivered(sink) == [str(i) for i in range(25)]
    await pub.release()


async def test_drop_oldest_keeps_the_newest() -> None:
    sink = MemorySink()
    pub = _publisher(sink, buffer={"max_events": 5, "on_full": "drop_oldest"})
    _put(pub, range(8))
    assert pub.dropped == {"buffer_full": 3}
    pub.acquire()
    await wait_for(lambda: pub.sent == 5)
    assert _delivered(sink) == ["3", "4", "5", "6", "7"]
    await pub.release()


async def test_drop_newest_keeps_the_oldest() -> None:
    sink = MemorySink()
    pub = _publisher(sink, buffer={"max_events": 5, "on_full": "drop_newest"})
    _put(pub, range(8))
    assert pub.dropped == {"buffer_full": 3}
    pub.acquire()
    await wait_for(lambda: pub.sent == 5)
    assert _delivered(sink) == ["0", "1", "2", "3", "4"]
    await pub.release()


async def test_partial_delivery_resends_only_the_rest() -> None:
    sink = MemorySink()
    sink.partial = 4
    pub = _publisher(sink)
    pub.acquire()
    _put(pub, range(10))
    await wait_for(lambda: pub.sent == 10)
    assert _delivered(sink) == [str(i) for i in range(10)]
    await pub.release()


async def test_outage_retries_until_recovery_then_delivers_in_order() -> None:
    sink = MemorySink()
    sink.down = True
    pub = _publisher(sink)
    pub.acquire()
    _put(pub, range(30))
    await wait_for(lambda: sink.calls >= 3)  # retried with backoff
    assert pub.failing and pub.sent == 0
    sink.down = False
    await wait_for(lambda: pub.sent == 30)
    assert _delivered(sink) == [str(i) for i in range(30)]
    assert not pub.failing
    await pub.release()


async def test_shutdown_with_sink_down_counts_what_is_lost() -> None:
    sink = MemorySink()
    sink.down = True
    pub = _publisher(sink)
    pub.acquire()
    _put(pub, range(25))
    await wait_for(lambda: sink.calls >= 1)
    await asyncio.wait_for(pub.release(), 5)
    assert pub.sent == 0
    assert pub.dropped == {"shutdown": 25}
