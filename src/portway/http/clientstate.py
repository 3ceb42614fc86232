"""The states of an upstream connection (:class:`~portway.http.client.UpstreamConnection`)
and the transitions allowed between them (a bit mask per state, checked by
``UpstreamConnection._to`` as ``http/serverstate.py`` describes for client connections)."""

from __future__ import annotations

from typing import Final

from portway.http.serverstate import mask, pack

#: created, the TCP (or TLS) connection not made yet
CONNECTING: Final = 0
#: connected, no exchange (pooled, or just opened)
IDLE: Final = 1
#: an exchange began (``begin``/``begin_sink``): the request is being written by the caller
#: and the final response head is awaited (1xx heads pass through)
HEAD: Final = 2
#: the final response head was parsed; its body is being read
BODY: Final = 3
#: the response is complete; the exchange has not let go of the connection yet (``finish``)
DONE: Final = 4
#: the exchange failed (timeout, invalid or unsolicited response) and the connection was
#: aborted; ``connection_lost`` is still to come
BROKEN: Final = 5
#: closed (``close``/``abort`` by its owner, or the upstream went away): terminal
CLOSED: Final = 6

NAMES: Final = ("CONNECTING", "IDLE", "HEAD", "BODY", "DONE", "BROKEN", "CLOSED")

#: state → bit mask of the states it may move to
NEXT: Final = (
    mask(IDLE),  # CONNECTING (asyncio makes the protocol once connected: nothing else)
    mask(HEAD, BROKEN, CLOSED),  # IDLE
    mask(BODY, BROKEN, CLOSED),  # HEAD
    mask(DONE, BROKEN, CLOSED),  # BODY
    mask(IDLE, BROKEN, CLOSED),  # DONE
    mask(CLOSED),  # BROKEN
    0,  # CLOSED
)

#: :data:`NEXT` packed (bit ``old * 8 + new``)
ALLOWED: Final = pack(NEXT)
