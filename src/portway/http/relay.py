"""Rules for relaying an upstream response to a client: one copy, every path and protocol.

The general path (``proxy/forward.py`` + ``proxy/handler.py``), the task-free path
(``proxy/fast.py``), the upgrade tunnel (``proxy/tunnel.py``) and the HTTP/2 writer
(``http/h2.py``) all call these functions; a path is made faster by *how* it calls them
(a memo, a lite head that only looks at the few lines a rule could touch), never by a second
copy of a rule. Pure functions of plain values: no I/O, no configuration objects.

- :func:`body_forbidden` / :func:`no_body`: RFC 9110 §6.4.1 — no content in a response to
  HEAD, in 1xx, 204 or 304.
- :data:`HOP_BY_HOP` (RFC 9110 §7.6.1) plus the fields a ``Connection`` value names never
  cross; :data:`FRAMING` is what the gateway writes itself (:func:`add_response_framing`).
- Via (RFC 9110 §7.6.3): the gateway appends ``1.1 <name>`` to the upstream's (never on a
  101, which keeps ``Upgrade``).
- 101 (RFC 9110 §15.2.2): relayed only as the answer to the WebSocket upgrade the client
  asked for (:func:`switch_allowed`, after ``http/upgrade.py``).
- 1xx other than 101: relayed with hop-by-hop fields dropped (:func:`informational_items`).
"""

from __future__ import annotations

from typing import Final

from portway.http.headers import HOP_BY_HOP, PLAIN_CONNECTION, value_tokens
from portway.http.memo import remember
from portway.http.models import Request
from portway.http.upgrade import is_websocket

__all__ = [
    "FRAMING",
    "HOP_BY_HOP",
    "NO_BODY_STATUS",
    "add_connection_field",
    "add_response_framing",
    "body_forbidden",
    "informational_items",
    "no_body",
    "response_header_items",
    "switch_allowed",
    "via_value",
    "without_framing",
]

#: final statuses that never carry content (RFC 9110 §15.3.5, §15.4.5)
NO_BODY_STATUS: Final = frozenset({204, 304})
#: the relayed response's framing fields, which the gateway writes itself
FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})
HOP_AND_FRAMING: Final = HOP_BY_HOP | FRAMING
#: Connection tokens that name no extra field to drop (the common "keep-alive" / "close")
_PLAIN_TOKENS: Final = frozenset({b"keep-alive", b"close"})
_UPGRADE_FIELDS: Final = frozenset({b"upgrade", b"connection"})


def body_forbidden(head_only: bool, status: int) -> bool:
    """A response to HEAD (``head_only``), a 1xx, 204 or 304 has no content, whatever its
    framing fields say."""
    return head_only or status < 200 or status == 204 or status == 304


def no_body(method: str, status: int) -> bool:
    """:func:`body_forbidden` for a request ``method``."""
    return method == "HEAD" or status < 200 or status == 204 or status == 304


def via_value(prior: bytes | None, via: bytes) -> bytes:
    """The Via value sent on: the upstream's ``prior`` value (if any), then ``1.1 <via>``."""
    return prior + b", 1.1 " + via if prior else b"1.1 " + via


def switch_allowed(asked_upgrade: bool, upgrade: bytes | None) -> bool:
    """Whether an upstream's 101 may be relayed: only as the switch to the WebSocket the
    client asked for (``asked_upgrade``; ``upgrade`` is the 101's Upgrade value). Anything
    else would leave the client and the gateway speaking different protocols."""
    return asked_upgrade and is_websocket(upgrade)


def response_header_items(
    raw: list[tuple[bytes, bytes]],
    status: int,
    via: bytes | None,
    drop_framing: bool = False,
    connection: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """One pass over an upstream response's fields: drop hop-by-hop fields, those named in
    ``connection`` (the Connection values the parser gathered) and, with ``drop_framing``,
    :data:`FRAMING` (the caller writes its own); merge Via (not on a 101, which keeps
    Upgrade)."""
    switching = status == 101
    base = HOP_AND_FRAMING if drop_framing else HOP_BY_HOP
    if (connection is None or connection in PLAIN_CONNECTION) and not switching:
        drop = base  # the common case ("Connection: keep-alive" or none): no set built
    else:
        tokens = value_tokens(connection) if connection is not None else set()
        drop = base if tokens <= _PLAIN_TOKENS else base | tokens
        if switching:
            drop = drop - _UPGRADE_FIELDS
    merge_via = via is not None and not switching
    prior: bytes | None = None
    kept: list[tuple[bytes, bytes]] = []
    for kv in raw:
        k = kv[0]
        if k in drop:
            continue
        if merge_via and k == b"via":
            v = kv[1]
            prior = v if prior is None else prior + b", " + v
            continue
        kept.append(kv)
    if via is not None and merge_via:
        kept.append((b"via", via_value(prior, via)))
    return kept


def informational_items(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The fields of a relayed 1xx (103 Early Hints): hop-by-hop ones and those its own
    ``Connection`` names dropped, on every path and protocol alike."""
    if not any(kv[0] in HOP_BY_HOP for kv in raw):
        return raw
    drop: frozenset[bytes] | set[bytes] = HOP_BY_HOP
    for k, v in raw:
        if k == b"connection":
            drop = drop | value_tokens(v)
    return [kv for kv in raw if kv[0] not in drop]


def without_framing(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``raw`` minus :data:`FRAMING` (for a caller about to write its own)."""
    return [kv for kv in raw if kv[0] not in FRAMING]


def add_response_framing(
    items: list[tuple[bytes, bytes]],
    req: Request,
    no_body: bool,
    content_length: bytes | None,
    keep: bool,
    length_sent: bool = False,
) -> tuple[str, bool]:
    """Append the framing fields of a relayed response to ``items``: its Content-Length when
    kept (``content_length``; not appended when ``length_sent``: the caller relays the
    upstream's own line), else chunked for HTTP/1.1 clients or close-delimited for 1.0,
    then Connection. Returns ``(mode, keep)``, mode one of none/length/chunked/close."""
    if no_body:
        mode = "none"
        if content_length is not None and not length_sent:
            items.append((b"content-length", content_length))
    elif content_length is not None:
        mode = "length"
        if not length_sent:
            items.append((b"content-length", content_length))
    elif req.version != "1.0":  # HTTP/2 streams take the chunked framing (and trailers)
        mode = "chunked"
        items.append((b"transfer-encoding", b"chunked"))
    else:
        mode = "close"
        keep = False
    add_connection_field(items, req, keep)
    return mode, keep


def add_connection_field(items: list[tuple[bytes, bytes]], req: Request, keep: bool) -> None:
    """``Connection: close`` exactly when the connection will close; ``keep-alive`` for a
    persistent HTTP/1.0 client, which would otherwise assume close."""
    if not keep:
        items.append((b"connection", b"close"))
    elif req.version == "1.0":
        items.append((b"connection", b"keep-alive"))


#: a field name as a stream sends it (lower-cased), for the names that are not
#: connection-specific: responses repeat their names, a lookup costs less than ``lower()``
_STREAM_NAMES: Final[dict[bytes, bytes]] = {}
_STREAM_NAMES_SIZE: Final = 512


def stream_fields(
    fields: list[tuple[bytes, bytes]], out: list[tuple[bytes, bytes]] | None = None
) -> list[tuple[bytes, bytes]]:
    """``fields`` for an HTTP/2 or HTTP/3 stream: lower-case names, connection-specific ones
    dropped (RFC 9113 §8.2.2, RFC 9114 §4.2: the hop-by-hop set above); appended to ``out``
    when given (a head's list that starts with ``:status``)."""
    if out is None:
        out = []
    names = _STREAM_NAMES
    for k, v in fields:
        n = names.get(k) if type(k) is bytes else None
        if n is None:
            n = bytes(k.lower())
            if n in HOP_BY_HOP:
                continue
            if type(k) is bytes:
                remember(names, k, n, _STREAM_NAMES_SIZE)
        out.append((n, v))
    return out


def head_ends_stream(
    method: str, status: int, mode: str, body: bytes, fields: list[tuple[bytes, bytes]]
) -> bool:
    """Whether a stream's response HEADERS also end it (HTTP/2 and HTTP/3): no body by the
    framing mode or the status/method, or an empty ``bytes`` body with Content-Length: 0 —
    a gRPC trailers-only response must not be followed by an empty DATA frame."""
    return (
        mode == "none"
        or no_body(method, status)
        or (not body and any(k == b"content-length" and v == b"0" for k, v in fields))
    )
