"""Byte ranges served from a stored complete response (RFC 9110 §14).

Pure functions: which part of a stored body a ``Range`` asks for, and whether ``If-Range``
lets the range apply. One range per request: a request for several ranges is answered with
the whole representation (200), which RFC 9110 §14.2 allows (a server MAY ignore Range), and
which spares clients a multipart/byteranges body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from portway.plugins.cache.directives import parse_http_date
from portway.plugins.cache.entry import CacheEntry

_SPEC = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """``first``..``last`` inclusive, within a body of ``size`` bytes."""

    first: int
    last: int
    size: int

    @property
    def content_range(self) -> bytes:
        return b"bytes %d-%d/%d" % (self.first, self.last, self.size)


#: the Range asks for nothing the body has: 416
UNSATISFIABLE = "unsatisfiable"


def byte_range(lines: list[str], size: int) -> ByteRange | str | None:
    """The single byte range asked for; :data:`UNSATISFIABLE`; or ``None`` when the Range
    is to be ignored (another unit, bad syntax, several ranges) and the whole body served."""
    if len(lines) != 1 or "," in lines[0]:
        return None
    m = _SPEC.match(lines[0])
    if m is None:
        return None
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, size - n), size - 1, size)
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # invalid: ignored
    if first >= size:
        return UNSATISFIABLE
    return ByteRange(first, min(last, size - 1), size)


def if_range_matches(value: str, entry: CacheEntry) -> bool:
    """RFC 9110 §13.1.5: the range applies only if the validator still describes ``entry``:
    an entity-tag by strong comparison, a date only as a strong Last-Modified (exactly
    equal, and at least a second before the response's Date)."""
    v = value.strip()
    if v.startswith('"') or v.startswith("W/"):
        etag = entry.header(b"etag")
        return (
            etag is not None
            and not v.startswith("W/")
            and not etag.strip().startswith("W/")
            and etag.strip() == v
        )
    when = parse_http_date(v)
    lm = parse_http_date(entry.header(b"last-modified"))
    date = parse_http_date(entry.header(b"date"))
    if when is None or lm is None or date is None:
        return False
    return when == lm and date - lm >= 1
