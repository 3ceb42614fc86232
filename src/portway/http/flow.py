"""Write-side flow control and write batching shared by the server and client protocols.

Batching: on a virtual machine a loopback ``send()`` that wakes an idle peer costs several
times one that finds it running (``python bench/wakeup_cost.py``). Requests arrive in bursts
(many sockets readable in one poll); sending each response the moment it is parsed spaces
the sends out by the parsing time, long enough for the peer to fall asleep in between.
:meth:`WriteFlow.write_soon` queues small writes and one ``call_soon`` per loop pass sends
them after every ready socket was handled: back to back, so only the first wakes the peer
(measured: 16k → 24k req/s and 23 → 10 µs of system time per proxied request). The first
write of a pass is not held (session 8: at c1 holding it only delayed the answer behind the
bookkeeping). Data is never held past the current loop pass, and a direct write or a close
sends what is queued first, so order is kept.
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

from mypy_extensions import mypyc_attr

from portway.http.loops import PerLoop

#: write-buffer watermarks for client and upstream transports (pause_writing above HIGH)
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024


def adopt_transport(transport: asyncio.BaseTransport) -> tuple[asyncio.Transport, str, int, int]:
    """Set the write watermarks on a new client transport and return it with
    ``(peer ip, peer port, local port)`` (empty/0 where the socket has no address)."""
    t = cast(asyncio.Transport, transport)
    t.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
    peer = t.get_extra_info("peername")
    local = t.get_extra_info("sockname")
    peer_ip, peer_port = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
    return t, peer_ip, peer_port, int(local[1]) if isinstance(local, tuple) else 0


def as_protocol(p: object) -> asyncio.BaseProtocol:
    """Our protocols implement asyncio's protocol methods without subclassing
    ``asyncio.Protocol`` (a Python base class would keep mypyc from compiling them as
    native classes); this tells the type checker what the event loop sees."""
    return cast(asyncio.BaseProtocol, p)


#: writes at least this big go out at once (batching is for small responses)
BATCH_MAX: Final = 16 * 1024


class _Batch:
    """Per-loop list of protocols with queued writes, flushed by one ``call_soon``."""

    __slots__ = ("busy", "flush_cb", "loop", "pending", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[WriteFlow] = []
        self.scheduled = False
        #: the last pass wrote to more than one transport: the loop is serving many clients
        #: at once, so the first write of the next pass is held with the rest
        self.busy = False
        #: ``flush`` bound once (a bound method per ``call_soon`` is an allocation)
        self.flush_cb = self.flush

    def flush(self) -> None:
        self.scheduled = False
        pending = self.pending
        self.pending = []
        # transports written in this pass: the queued ones, plus the first one when it
        # was written at once (not busy)
        self.busy = len(pending) >= (2 if self.busy else 1)
        for p in pending:
            p.flush_soon_writes()


_batch_for: PerLoop[_Batch] = PerLoop(_Batch)


@mypyc_attr(allow_interpreted_subclasses=True)
class WriteFlow:
    """An asyncio protocol base (duck-typed, see :func:`as_protocol`). Turns
    ``pause_writing``/``resume_writing`` into an awaitable :meth:`drain`, and batches small
    writes (:meth:`write_soon`).

    Subclasses set ``self._can_write = None`` in ``__init__``; the transport calls
    ``pause_writing`` above its high-water mark and ``resume_writing`` below the low one.
    Subclasses call :meth:`flush_soon_writes` before any direct ``transport.write`` and
    before ``close()``, and :meth:`drop_soon_writes` on abort or loss; they set ``closing``
    once the transport is closing.
    """

    _can_write: asyncio.Future[None] | None
    transport: asyncio.Transport | None
    #: queued writes (None when nothing is queued)
    _soon: list[bytes] | None = None
    _batch: _Batch | None = None
    #: the transport is closing or closed (set by ``close``/``abort``, the peer's EOF and
    #: ``connection_lost``): what ``transport.is_closing()`` says, without a method call
    closing: bool = False

    def eof_received(self) -> bool | None:
        """The peer half-closed: by default, close our side too (as ``asyncio.Protocol``)."""
        return None

    def write_soon(self, data: bytes, body: bytes = b"") -> None:
        """Write ``data`` (then ``body``) at the end of this loop pass (see the module
        docstring). ``body``: a response's body after its head, handed as a second piece
        rather than joined — where the two go out at once the transport gets both
        (``writelines``: uvloop sends them with one ``writev``; the body is not copied into a
        joined buffer); the same bytes in the same order as ``write_soon(data + body)``."""
        soon = self._soon
        if soon is not None:
            soon.append(data)
            if body:
                soon.append(body)
            return
        t = self.transport
        if t is None or self.closing:
            return
        if len(data) + len(body) >= BATCH_MAX:
            if body:
                t.writelines([data, body])
            else:
                t.write(data)
            return
        b = self._batch
        if b is None:
            b = self._batch = _batch_for(asyncio.get_running_loop())
        if not b.scheduled:
            # the flush scheduled here marks the pass: the writes that follow in it are
            # batched behind this one. At low concurrency — one request per pass — this
            # first write goes out now: the response reaches the client before the
            # exchange's bookkeeping (pool, metrics, log hooks) instead of after it. When
            # the last pass wrote to several transports it is held too: sent at once it
            # wakes its idle peer (the upstream, a client), which then falls asleep again
            # before the pass's other writes reach it — two wake-ups instead of one.
            b.scheduled = True
            if not b.busy:
                # the write first: at c1 it is what the peer waits for, and scheduling
                # the flush (a handle made) is not
                try:
                    if body:
                        t.writelines([data, body])
                    else:
                        t.write(data)
                finally:
                    b.loop.call_soon(b.flush_cb)
                return
            b.loop.call_soon(b.flush_cb)
        self._soon = [data, body] if body else [data]
        b.pending.append(self)

    def flush_soon_writes(self) -> None:
        soon = self._soon
        if soon is None:
            return
        self._soon = None
        t = self.transport
        if t is not None and not self.closing:
            t.write(soon[0] if len(soon) == 1 else b"".join(soon))

    def drop_soon_writes(self) -> None:
        self._soon = None

    def pause_writing(self) -> None:
        if self._can_write is None:
            self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        w = self._can_write
        self._can_write = None
        if w is not None and not w.done():
            w.set_result(None)

    async def drain(self) -> None:
        """Return once the transport accepts more data (immediately when not paused)."""
        w = self._can_write
        if w is not None:
            await w
