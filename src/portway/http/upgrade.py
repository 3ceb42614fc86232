"""Which protocol upgrades the gateway tunnels (RFC 9110 §7.8, RFC 6455 §4).

Only WebSocket is tunnelled, and only on routes that allow it (``routes[].websocket``). Any
other upgrade — ``h2c`` above all (RFC 7540 §3.2, removed by RFC 9113) — is dropped: the
request is forwarded as a plain request without ``Upgrade``, ``HTTP2-Settings`` and the
Connection tokens naming them, and the client connection closes after the answer (llhttp
stops parsing at an upgrade request, so nothing after it can be read as HTTP). Tunnelling an
h2c upgrade would hand the client a raw HTTP/2 connection to the upstream on which routing,
auth and every plugin are bypassed.

An upstream's 101 is relayed only when the gateway asked for a WebSocket upgrade and the 101
switches to WebSocket; any other 101 closes both connections (the client gets a 502 when
nothing was sent to it yet).
"""

from __future__ import annotations

from typing import Final

#: the one upgrade token tunnelled (RFC 6455 §4.1: case-insensitive)
WEBSOCKET: Final = b"websocket"


def is_websocket(upgrade: bytes | None) -> bool:
    """Whether an ``Upgrade`` field value asks for (or a 101's value switches to) WebSocket
    and nothing else: exactly one protocol, ``websocket`` in any case, no version suffix."""
    if upgrade is None:
        return False
    return upgrade.strip(b" \t").lower() == WEBSOCKET
