"""Identity headers sent upstream, and their removal from client requests.

The upstream trusts ``X-Consumer-*`` only because the gateway guarantees a client can never
supply them: every auth plugin removes them from the upstream request before deciding, and
sets them again only from an authenticated :class:`~portway.pipeline.context.Consumer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import orjson

from portway.http.headers import Headers
from portway.pipeline.context import Consumer

CONSUMER_ID = b"x-consumer-id"
CONSUMER_USERNAME = b"x-consumer-username"
CONSUMER_GROUPS = b"x-consumer-groups"
CREDENTIAL = b"x-credential-identifier"
ANONYMOUS = b"x-anonymous-consumer"

STANDARD: frozenset[bytes] = frozenset(
    {CONSUMER_ID, CONSUMER_USERNAME, CONSUMER_GROUPS, CREDENTIAL, ANONYMOUS}
)

#: characters kept as-is when a value must be percent-encoded (visible ASCII minus ``%``)
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
MAX_VALUE = 4096


def header_value(value: Any) -> str | None:
    """A header-safe rendering of a claim value, or ``None`` when it cannot be sent.

    Strings and numbers are sent as text, lists comma-joined, objects as JSON. Anything outside
    visible ASCII (CR/LF in particular, which would split the header) is percent-encoded, so a
    token's contents can never inject a header.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, list | tuple):
        parts = [header_value(v) for v in value]
        text = ",".join(p for p in parts if p is not None)
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            return None
    if not (text.isascii() and text.isprintable()):
        text = quote(text, safe=_SAFE)
    text = text.strip()
    if not text or len(text) > MAX_VALUE:
        return None
    return text


def strip_identity(headers: Headers, extra: Iterable[bytes] = ()) -> bool:
    """Remove client-supplied identity headers (the standard ones plus ``extra``); returns
    whether any was there."""
    names = STANDARD.union(extra) if extra else STANDARD
    for k, _ in headers.raw():
        if k in names:
            headers.remove_many(names)
            return True
    return False


def consumer_pairs(consumer: Consumer) -> list[tuple[bytes, bytes]]:
    """The ``X-Consumer-*`` fields describing ``consumer`` (a function of the consumer alone:
    callers that see the same consumer often may keep the list and reuse it)."""
    out: list[tuple[bytes, bytes]] = []
    for name, raw in (
        (CONSUMER_ID, consumer.id),
        (CONSUMER_USERNAME, consumer.username),
        (CONSUMER_GROUPS, sorted(consumer.groups)),
        (CREDENTIAL, consumer.credential),
    ):
        v = header_value(raw)
        if v is not None:
            out.append((name, v.encode("ascii")))
    if consumer.anonymous:
        out.append((ANONYMOUS, b"true"))
    return out


def set_consumer_headers(
    headers: Headers,
    consumer: Consumer,
    pairs: list[tuple[bytes, bytes]] | None = None,
    *,
    stripped: bool = False,
) -> None:
    """Describe ``consumer`` to the upstream with the ``X-Consumer-*`` headers.

    ``pairs``: the consumer's :func:`consumer_pairs`, when the caller keeps them;
    ``stripped``: the caller removed every identity header since anything could have set one
    (the list is then not rebuilt again).
    """
    if not stripped:
        strip_identity(headers)
    add = headers.add_raw
    for name, value in consumer_pairs(consumer) if pairs is None else pairs:
        add(name, value)


def lookup_claim(claims: dict[str, Any], path: str) -> Any:
    """``claims[path]``, following dots into nested objects (``realm_access.roles``) when the
    dotted name is not itself a claim."""
    if path in claims:
        return claims[path]
    cur: Any = claims
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur
