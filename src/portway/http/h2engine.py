"""Which HTTP/2 server engine serves a connection, and what both engines share.

Two engines implement the same connection (``http/ng2.py`` on libnghttp2 through cffi, and
``http/h2.py`` on the pure-Python ``h2`` library): the same :class:`Request` per stream,
the same response-writer interface, the same limits. :func:`engine` picks libnghttp2 when it
loads and ``h2`` otherwise; ``PORTWAY_H2_ENGINE=h2|nghttp2`` forces one (read per
connection, so tests can run both). This module imports neither engine until a connection
needs one (a worker that never sees HTTP/2 loads neither).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# --- abuse limits (each a connection error ENHANCE_YOUR_CALM when exceeded) ----------------
#: CONTINUATION frames of one header block (h2's own limit is 64 frames of any size)
MAX_CONTINUATIONS = 16
#: client resets of streams whose response was not complete (CVE-2023-44487 "rapid reset"):
#: tolerated up to this count, and beyond it while they stay under half the streams opened
#: (browsers cancel some streams; an attacker cancels nearly all)
PREMATURE_RESETS = 100
#: PING and SETTINGS frames (each forces an answer): a token bucket per connection
CONTROL_BURST = 100.0
CONTROL_PER_SECOND = 10.0


def goaway_bytes(code: int = 1) -> bytes:
    """A SETTINGS + GOAWAY(``code``, last stream 0) pair for a client whose bytes began as an
    HTTP/2 preface and then went wrong (default: PROTOCOL_ERROR)."""
    return (
        b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x08\x07\x00\x00\x00\x00\x00"
        + b"\x00\x00\x00\x00"
        + code.to_bytes(4, "big")
    )


def engine() -> str:
    """``"nghttp2"`` or ``"h2"``: the environment's choice, else libnghttp2 when it loads."""
    forced = os.environ.get("PORTWAY_H2_ENGINE", "")
    if forced == "h2":
        return "h2"
    from portway.http import ng2lib

    if ng2lib.load() is not None:
        return "nghttp2"
    if forced == "nghttp2":
        raise RuntimeError("PORTWAY_H2_ENGINE=nghttp2 but libnghttp2 could not be loaded")
    return "h2"


def new_connection(
    app: Any,
    limits: Any,
    trusted: Any,
    scheme: str,
    loop: asyncio.AbstractEventLoop,
    extra: dict[str, Any],
    underscores: bool | None,
) -> Any:
    """A server-side HTTP/2 connection protocol of the chosen engine (not yet made)."""
    if engine() == "nghttp2":
        from portway.http.ng2 import NgConnection

        return NgConnection(app, limits, trusted, scheme, loop, extra, underscores)
    from portway.http.h2 import H2Connection

    return H2Connection(app, limits, trusted, scheme, loop, extra, underscores)


def drain_connections(app: Any = None) -> int:
    """Graceful GOAWAY on every live HTTP/2 connection of either engine (of ``app`` when
    given); how many there were. The worker calls it when it stops accepting."""
    n = 0
    for name in ("portway.http.ng2", "portway.http.h2"):
        mod = sys.modules.get(name)
        if mod is not None:
            n += int(mod.drain_connections(app))
    return n


__all__ = ["PREFACE", "drain_connections", "engine", "goaway_bytes", "new_connection"]
