"""The states of an HTTP/1.1 client connection (:class:`~portway.http.server.ServerConnection`)
and the transitions allowed between them.

A state is a small int (compiled, a comparison is one instruction); :data:`NEXT` holds, per
state, a bit mask of the states it may move to. ``ServerConnection._to`` is the one place a
state changes: it checks the table on every transition (a shift and a mask) and reports an
illegal one through :func:`illegal_transition` — logged in production, raised when
:data:`TRACE` ``.strict`` is set (the test suite sets it), so a table that no longer describes
the code fails tests instead of drifting. ``TRACE.seen`` (None unless a test asks) records the
transitions taken, so a test can check that real sockets exercise every row of the table.
"""

from __future__ import annotations

import logging
import os
from typing import Final

log: Final = logging.getLogger("portway.http")

#: awaiting or reading a request head, nothing being served; the header timeout runs
HEAD: Final = 0
#: between requests on a kept-alive connection; the idle timeout runs
IDLE: Final = 1
#: the worker task serves the head of the request queue (DISPATCHED)
TASK: Final = 2
#: a callback exchange serves a request without a task (FAST, see ``App.try_fast``)
FAST: Final = 3
#: the transport is closing (``close``/``abort``, an answered EOF); nothing new is served
CLOSING: Final = 4
#: ``connection_lost`` ran (terminal)
CLOSED: Final = 5
#: switched to HTTP/2 (ALPN ``h2`` or the h2c preface): the transport belongs to an
#: ``H2Connection`` now (terminal for this object)
H2: Final = 6

NAMES: Final = ("HEAD", "IDLE", "TASK", "FAST", "CLOSING", "CLOSED", "H2")


def mask(*states: int) -> int:
    """The bit mask of ``states``."""
    m = 0
    for s in states:
        m |= 1 << s
    return m


#: state → bit mask of the states it may move to (the docstring of ``ServerConnection`` has
#: the same table with the events)
NEXT: Final = (
    mask(TASK, FAST, CLOSING, CLOSED, H2),  # HEAD
    mask(HEAD, TASK, FAST, CLOSING, CLOSED),  # IDLE
    mask(IDLE, CLOSING, CLOSED),  # TASK
    mask(IDLE, TASK, FAST, CLOSING, CLOSED),  # FAST
    mask(CLOSED),  # CLOSING
    0,  # CLOSED
    0,  # H2
)


def pack(nxt: tuple[int, ...]) -> int:
    """A transition table as one int: bit ``old * 8 + new`` is set when allowed (compiled,
    testing a bit of an int is native arithmetic; indexing a tuple of ints boxed all seven
    on every transition)."""
    bits = 0
    for a, m in enumerate(nxt):
        bits |= m << (a * 8)
    return bits


#: :data:`NEXT` packed (see :func:`pack`)
ALLOWED: Final = pack(NEXT)


def table(nxt: tuple[int, ...] = NEXT) -> set[tuple[int, int]]:
    """Every allowed ``(from, to)`` pair of a transition table (default: the server's)."""
    n = len(nxt)
    return {(a, b) for a in range(n) for b in range(n) if (nxt[a] >> b) & 1}


class IllegalTransitionError(Exception):
    """A connection moved between two states the table does not connect (a Portway bug)."""


class Trace:
    """Test switches: ``strict`` raises on an illegal transition; ``seen``/``seen_up``, when
    sets, collect ``(from, to)`` of every transition taken by server/upstream connections."""

    def __init__(self) -> None:
        #: PORTWAY_STRICT_STATES=1 starts a process strict (a test run of any suite)
        self.strict = os.environ.get("PORTWAY_STRICT_STATES") == "1"
        self.seen: set[tuple[int, int]] | None = None
        self.seen_up: set[tuple[int, int]] | None = None


#: the switches (one per process)
TRACE: Final = Trace()


def illegal_transition(kind: str, names: tuple[str, ...], old: int, new: int) -> None:
    """Report an illegal transition of a ``kind`` connection (raises when strict)."""
    msg = f"{kind} connection: illegal state transition {names[old]} -> {names[new]}"
    if TRACE.strict:
        raise IllegalTransitionError(msg)
    log.error("%s (a Portway bug; please report it)", msg)
