"""NATS sink (nats-py): JetStream publishes with acks when the subject is bound to a stream,
core NATS publishes followed by a flush (PING/PONG round trip) otherwise.

Which applies is asked of the server per subject (``STREAM.NAMES`` filtered by subject) and
remembered for ``BINDING_TTL`` seconds, so a stream created later is picked up. A core
publish is only as durable as the subscribers listening at that moment: the flush proves the
server got the batch, nothing more.

nats-py would queue publishes in its own reconnect buffer while disconnected and report
success; the sink refuses to publish while the client is not connected instead, so the batch
stays in Portway's bounded buffer and is counted there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from portway.plugins.publish.sinks.base import EventSink, Item, SinkError

#: seconds a subject's stream binding (or its absence) is remembered
BINDING_TTL = 10.0


class NatsSink(EventSink):
    kind = "nats"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._nc: Any = None
        self._js: Any = None
        self._bound: dict[str, tuple[bool, float]] = {}

    async def _connect(self) -> Any:
        import nats

        nc = self._nc
        if nc is not None and nc.is_connected:
            return nc
        if nc is not None and not nc.is_closed:
            # the client is reconnecting on its own: do not pile publishes into its buffer
            raise SinkError("nats: disconnected, reconnecting")
        try:
            nc = await nats.connect(
                self.url,
                connect_timeout=max(1, int(self.timeout)),
                reconnect_time_wait=0.5,
                max_reconnect_attempts=-1,
                allow_reconnect=True,
                name="portway-publish",
            )
        except Exception as e:
            raise SinkError(f"nats: cannot connect to {self.url}: {e}") from e
        self._nc = nc
        self._js = nc.jetstream(timeout=self.timeout)
        self._bound.clear()
        return nc

    async def _is_bound(self, subject: str) -> bool:
        from nats.js.errors import NotFoundError

        now = time.monotonic()
        hit = self._bound.get(subject)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            await self._js.find_stream_name_by_subject(subject)
            bound = True
        except NotFoundError:
            bound = False
        except Exception as e:
            # no JetStream on the server (or no permission to ask): plain core NATS
            if "503" in str(e) or "no responders" in str(e).lower():
                bound = False
            else:
                raise
        self._bound[subject] = (bound, now + BINDING_TTL)
        return bound

    async def send(self, batch: Sequence[Item]) -> None:
        nc = await self._connect()
        done = 0
        try:
            # runs of the same subject kind keep the order of the batch
            i = 0
            while i < len(batch):
                bound = await self._is_bound(batch[i][0])
                j = i
                while j < len(batch) and (
                    batch[j][0] == batch[i][0] or await self._is_bound(batch[j][0]) == bound
                ):
                    j += 1
                if bound:
                    await self._js_publish(batch[i:j])
                else:
                    for subject, payload, _ in batch[i:j]:
                        await nc.publish(subject, payload)
                    await nc.flush(timeout=self.timeout)
                done = i = j
        except SinkError as e:
            raise SinkError(str(e), done + e.done) from e
        except Exception as e:
            raise SinkError(f"nats: {type(e).__name__}: {e}", done) from e

    async def _js_publish(self, run: Sequence[Item]) -> None:
        # the event's request id as Nats-Msg-Id: JetStream drops a resend of an event it
        # already stored (within the stream's duplicate window), so a retry after a lost ack
        # does not duplicate it
        futs = [
            await self._js.publish_async(s, p, headers={"Nats-Msg-Id": mid} if mid else None)
            for s, p, mid in run
        ]
        results = await asyncio.gather(
            *(asyncio.wait_for(f, self.timeout) for f in futs), return_exceptions=True
        )
        for k, r in enumerate(results):
            if isinstance(r, BaseException):
                raise SinkError(f"nats: JetStream publish not acknowledged: {r!r}", k)

    async def aclose(self) -> None:
        nc = self._nc
        self._nc = None
        if nc is not None and not nc.is_closed:
            await nc.close()
