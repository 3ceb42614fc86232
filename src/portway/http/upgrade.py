"""Which protocol upgrades the gateway tunnels (RFC 9110 §7.8, RFC 6455 §4).

Only WebSocket is tunnelled, only for a handshake without a body (a GET, RFC 6455 §4.1), and
only on routes that allow it (``routes[].websocket``; on other routes the handshake is served
as a plain request and the connection ends). Any other upgrade — ``h2c`` above all (RFC 7540
§3.2, removed by RFC 9113), an unknown protocol, a WebSocket handshake with a body — is
ignored (RFC 9110 §7.8, as nginx and Envoy do): the request is forwarded as a plain request,
with its body, without ``Upgrade``, ``HTTP2-Settings`` and the Connection tokens naming them,
and the connection is read on as HTTP/1.1 (``ServerParsing._skip_upgrade``: llhttp stops at
an upgrade request's head and the parse resumes there). Tunnelling an h2c upgrade would hand
the client a raw HTTP/2 connection to the upstream on which routing, auth and every plugin
are bypassed; upgrading a request with a body would leave the body's end to the upstream's
reading of the tunnel.

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
