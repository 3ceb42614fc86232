"""The seam between the publisher (buffer, batching, retries) and one broker client."""

from __future__ import annotations

from collections.abc import Sequence

#: one serialised event: destination, JSON payload, id (the request id) or None
Item = tuple[str, bytes, str | None]


class SinkError(Exception):
    """A batch was not (wholly) delivered; the publisher retries it after a backoff.

    ``done`` counts the batch's leading events that *were* delivered (acknowledged), so a
    retry resends only the rest; 0 when unknown (the retry may then duplicate events: the
    delivery guarantee is at-least-once)."""

    def __init__(self, message: str, done: int = 0) -> None:
        super().__init__(message)
        self.done = done


class RejectedError(Exception):
    """The sink refused the batch for good (e.g. a webhook's 4xx): retrying cannot help, the
    events are dropped and counted with reason ``rejected``."""


class EventSink:
    """Delivers batches of serialised events. ``send`` either returns (every event of the batch
    delivered, acknowledged where the broker acknowledges) or raises :class:`SinkError` /
    :class:`RejectedError`; it is called by one task at a time, so implementations keep their
    connection state without locks and (re)connect lazily inside ``send``."""

    #: the ``sink`` label of the metrics
    kind: str = ""

    async def send(self, batch: Sequence[Item]) -> None:
        """Deliver ``(destination, payload, event id)`` items in order (the id is the
        request id when the event has one, for brokers that deduplicate by message id)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close connections; the publisher calls it once, after its last ``send``."""
