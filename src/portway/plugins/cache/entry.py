"""What the cache stores: complete responses and Vary indexes, plus their wire encoding.

The object at a primary key is either a :class:`CacheEntry` (the response did not vary) or a
:class:`VaryIndex` naming the request fields that select a variant; variants then live at
``primary#gen#digest`` keys. ``gen`` changes whenever an index is created afresh, so purging
the index makes every older variant unreachable even if a store still holds it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

_HEADER_OVERHEAD = 64
_ENTRY_OVERHEAD = 256


@dataclass(slots=True)
class CacheEntry:
    """A stored final response.

    ``request_time``/``response_time`` are wall-clock seconds (shared with other instances
    through Redis) taken when the upstream request was sent and its response head arrived;
    they feed the Age calculation of RFC 9111 §4.2.3. ``expires_at`` is when a store may drop
    the entry (freshness + stale windows), not when it becomes stale.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    request_time: float
    response_time: float
    expires_at: float
    #: derived freshness data, computed once per entry by the policy (never serialised)
    meta: Any = field(default=None, compare=False, repr=False)
    #: the stored fields prebuilt as header lines (``hit.Wire``; never serialised)
    wire: Any = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        return (
            len(self.body)
            + sum(len(k) + len(v) + _HEADER_OVERHEAD for k, v in self.headers)
            + _ENTRY_OVERHEAD
        )

    def header_values(self, name: bytes) -> list[str]:
        return [v.decode("latin-1") for k, v in self.headers if k == name]

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


@dataclass(slots=True)
class VaryIndex:
    """Names the request fields (lower-cased, sorted) whose values select a stored variant."""

    names: tuple[str, ...]
    gen: str
    expires_at: float

    @property
    def size(self) -> int:
        return _ENTRY_OVERHEAD + sum(len(n) for n in self.names)


Stored = CacheEntry | VaryIndex

_LEN = struct.Struct(">I")


def encode(obj: Stored) -> bytes:
    """Binary form for shared stores: a tag byte, then JSON metadata (+ the raw body)."""
    if isinstance(obj, VaryIndex):
        return b"V" + orjson.dumps({"n": list(obj.names), "g": obj.gen, "x": obj.expires_at})
    meta = orjson.dumps(
        {
            "s": obj.status,
            "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in obj.headers],
            "q": obj.request_time,
            "r": obj.response_time,
            "x": obj.expires_at,
        }
    )
    return b"E" + _LEN.pack(len(meta)) + meta + obj.body


def decode(data: bytes) -> Stored | None:
    """Inverse of :func:`encode`; ``None`` for anything unreadable (treated as a miss)."""
    try:
        tag = data[:1]
        if tag == b"V":
            m = orjson.loads(data[1:])
            return VaryIndex(tuple(str(n) for n in m["n"]), str(m["g"]), float(m["x"]))
        if tag == b"E":
            (n,) = _LEN.unpack_from(data, 1)
            m = orjson.loads(data[5 : 5 + n])
            headers = [(str(k).encode("latin-1"), str(v).encode("latin-1")) for k, v in m["h"]]
            return CacheEntry(
                status=int(m["s"]),
                headers=headers,
                body=bytes(data[5 + n :]),
                request_time=float(m["q"]),
                response_time=float(m["r"]),
                expires_at=float(m["x"]),
            )
    except (ValueError, KeyError, TypeError, struct.error, UnicodeError):
        return None
    return None
