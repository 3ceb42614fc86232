"""The bounded event buffer and the one background task per sink that drains it.

``put`` is the only thing the request path calls: an append to a deque (and, when the buffer
turns non-empty or fills a batch, an ``asyncio.Event.set``). It never awaits, never does I/O
and never blocks: when the buffer is full the oldest or the newest event is dropped and
counted (``on_full``). The sender task takes up to ``batch.max_events`` events once that many
wait or the oldest has waited ``batch.max_wait``, serialises them and hands them to the sink.
A failed batch is retried (only its undelivered part, when the sink can tell) after a wait
that doubles from ``retry.initial`` to ``retry.max``; meanwhile new events queue in the
buffer, so an outage shorter than the buffer loses nothing.

Metrics (process-wide counters read by ``observability/metrics.py`` at scrape time and merged
across workers like the gateway's own): ``portway_events_sent_total{sink}`` and
``portway_events_dropped_total{sink,reason}`` with reason ``buffer_full``, ``rejected`` (the
sink refused the batch for good) or ``shutdown`` (still buffered when the gateway stopped and
the sink stayed unreachable for the last ``retry.timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from portway.observability.sources import EVENTS, register_counts
from portway.plugins.publish.config import PublishConfig
from portway.plugins.publish.sinks.base import EventSink, Item, RejectedError, SinkError
from portway.tasks import stop_task

log = logging.getLogger("portway.publish")

#: process-wide totals by (sink, reason), reason "" for sent events; cumulative across
#: reloads and publishers (the metrics exporter reads them through :func:`counts`, registered
#: with ``observability/sources.py`` below)
_COUNTS: dict[tuple[str, str], int] = {}


def counts() -> dict[tuple[str, str], int]:
    return dict(_COUNTS)


def _count(sink: str, reason: str, n: int) -> None:
    k = (sink, reason)
    _COUNTS[k] = _COUNTS.get(k, 0) + n


register_counts(EVENTS, counts)


Event = tuple[str, dict[str, Any]]


class Publisher:
    """One sink's buffer and sender task, shared by every plugin instance with the same
    config (and across reloads). ``acquire``/``release`` count the plugin instances using
    it; the last ``release`` (or ``aclose``) flushes what is buffered for up to
    ``retry.timeout`` and stops. Counters ``sent``/``dropped`` mirror the metrics."""

    def __init__(self, config: PublishConfig, sink_factory: Callable[[], EventSink]) -> None:
        self.config = config
        self._sink_factory = sink_factory
        self._sink: EventSink | None = None
        self.kind = config.sink
        self.buf: deque[Event] = deque()
        self._max = config.buffer.max_events
        self._drop_oldest = config.buffer.on_full == "drop_oldest"
        self._batch = config.batch.max_events
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._users = 0
        self._closing = False
        #: when closing: the monotonic time after which undelivered events are dropped
        self._deadline = 0.0
        self.sent = 0
        self.dropped: dict[str, int] = {}
        #: True while the sink is failing (for logs: one warning per outage)
        self.failing = False

    # --- request path ----------------------------------------------------------------------
    def put(self, dest: str, record: dict[str, Any]) -> None:
        buf = self.buf
        if len(buf) >= self._max:
            self._drop("buffer_full", 1)
            if not self._drop_oldest:
                return
            buf.popleft()
        buf.append((dest, record))
        n = len(buf)
        if n == 1 or n == self._batch:
            self._wake.set()

    # --- lifecycle -------------------------------------------------------------------------
    def acquire(self) -> None:
        self._users += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"portway-publish-{self.kind}"
            )

    async def release(self) -> None:
        self._users -= 1
        if self._users <= 0:
            await self.aclose()

    async def aclose(self) -> None:
        """Flush (bounded by ``retry.timeout``), then stop the task and close the sink."""
        if self._closing:
            return
        self._closing = True
        self._deadline = time.monotonic() + self.config.retry.timeout
        task = self._task
        if task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), self.config.retry.timeout + 1.0)
            except TimeoutError:
                await stop_task(task)
            except Exception:
                log.exception("publish: sender task failed")
        if self.buf:
            self._drop("shutdown", len(self.buf))
            self.buf.clear()
        if self._sink is not None:
            try:
                await self._sink.aclose()
            except Exception as e:  # closing a broken connection must not fail shutdown
                log.debug("publish: closing %s sink: %s", self.kind, e)

    # --- sender ----------------------------------------------------------------------------
    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        _count(self.kind, reason, n)

    async def _run(self) -> None:
        wait = self.config.batch.max_wait
        while True:
            if not self.buf:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self.buf) < self._batch and not self._closing:
                # wait for a full batch, at most max_wait from now (the first event's arrival
                # woke us, so this is its wait)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            batch = [self.buf.popleft() for _ in range(min(self._batch, len(self.buf)))]
            await self._deliver(batch)

    async def _deliver(self, batch: list[Event]) -> None:
        items: list[Item] = []
        for dest, rec in batch:
            rid = rec.get("request_id")
            items.append((dest, orjson.dumps(rec), rid if isinstance(rid, str) else None))
        retry = self.config.retry
        delay = retry.initial
        while items:
            if self._closing and time.monotonic() >= self._deadline:
                self._drop("shutdown", len(items))
                return
            if self._sink is None:
                self._sink = self._sink_factory()
            try:
                await asyncio.wait_for(self._sink.send(items), retry.timeout)
            except RejectedError as e:
                log.error("publish: %s sink rejected %d event(s): %s", self.kind, len(items), e)
                self._drop("rejected", len(items))
                return
            except Exception as e:  # any client error is an outage to retry, never a dead task
                done = e.done if isinstance(e, SinkError) else 0
                if done:
                    self._count_sent(done)
                    items = items[done:]
                if not self.failing:
                    self.failing = True
                    log.warning(
                        "publish: %s sink failing (%s); retrying with backoff, %d buffered",
                        self.kind,
                        e or type(e).__name__,
                        len(self.buf) + len(items),
                    )
                if self._closing:
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        self._drop("shutdown", len(items))
                        return
                    delay = min(delay, left)
                await asyncio.sleep(delay)
                delay = min(retry.max, delay * 2)
                continue
            self._count_sent(len(items))
            if self.failing:
                self.failing = False
                log.warning("publish: %s sink recovered", self.kind)
            return

    def _count_sent(self, n: int) -> None:
        self.sent += n
        _count(self.kind, "", n)
