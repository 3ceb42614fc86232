"""Responses built from stored entries, and the entry a 304 turns a stored one into.

Pure functions over :class:`~portway.plugins.cache.entry.CacheEntry` (no store, no clock
reads: callers pass ``now``)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from portway.http.headers import Headers
from portway.http.models import Response
from portway.plugins.cache.directives import format_http_date, parse_http_date
from portway.plugins.cache.entry import CacheEntry
from portway.plugins.cache.policy import (
    Pairs,
    first,
    has_conditionals,
    merge_304,
    not_modified,
    response_headers,
)
from portway.plugins.cache.ranges import ByteRange, byte_range, if_range_matches

#: fields describing a stored body, left off a 416 (whose body is not that representation)
_REPRESENTATION_FIELDS: Final = frozenset(
    {b"content-type", b"content-encoding", b"content-language"}
)


def answer(
    entry: CacheEntry,
    age: float,
    label: str,
    req: Pairs,
    strip: Collection[bytes],
    key: str | None,
) -> Response:
    """``entry`` as a response to a request with fields ``req``: 304 when its conditionals
    match; ``strip`` names fields never sent to clients; ``key`` is added as X-Cache-Key."""
    if has_conditionals(req) and not_modified(req, entry):
        items = response_headers(entry, age, for_304=True)
        items.append((b"x-cache", label.encode()))
        return Response(304, Headers(items), b"")
    items = [(k, v) for k, v in response_headers(entry, age) if k not in strip]
    if entry.status != 204 and not 100 <= entry.status < 200:
        items.append((b"content-length", str(len(entry.body)).encode()))
    items.append((b"x-cache", label.encode()))
    if key is not None:
        items.append((b"x-cache-key", key.encode()))
    # HEAD keeps the body: the data plane frames Content-Length from it and sends none
    return Response(entry.status, Headers(items), entry.body)


def range_answer(
    entry: CacheEntry,
    age: float,
    label: str,
    req: Pairs,
    ranges: list[str],
    strip: Collection[bytes],
    key: str | None,
) -> Response | None:
    """206 with the one range asked for, or 416 when it is unsatisfiable; ``None`` when the
    whole response answers instead (Range ignored, If-Range not matching, a conditional
    that makes it a 304, or a stored status other than 200)."""
    if_range = first(req, b"if-range")
    if (
        entry.status != 200
        or (has_conditionals(req) and not_modified(req, entry))
        or (if_range is not None and not if_range_matches(if_range, entry))
    ):
        return None
    r = byte_range(ranges, len(entry.body))
    if r is None:
        return None
    items = [
        (k, v) for k, v in response_headers(entry, age) if k not in strip and k != b"content-range"
    ]
    items.append((b"x-cache", label.encode()))
    if key is not None:
        items.append((b"x-cache-key", key.encode()))
    if isinstance(r, ByteRange):
        items.append((b"content-range", r.content_range))
        return Response(206, Headers(items), entry.body[r.first : r.last + 1])
    # 416 carries the representation's length; its body is not the stored one
    items = [(k, v) for k, v in items if k not in _REPRESENTATION_FIELDS]
    items.append((b"content-range", b"bytes */%d" % len(entry.body)))
    return Response(416, Headers(items), b"")


def merged_entry(
    entry: CacheEntry,
    resp304: Pairs,
    request_time: float,
    now: float,
    *,
    store_set_cookie: bool,
    targets: tuple[bytes, ...],
) -> CacheEntry:
    """The stored response updated by a 304 that validated it (RFC 9111 §4.3.4)."""
    headers = merge_304(entry.headers, resp304, store_set_cookie=store_set_cookie, targets=targets)
    names = {k for k, _ in resp304}
    # the 304 is the newest response: its Date and Age (or their absence) now apply
    if b"date" not in names or parse_http_date(first(resp304, b"date")) is None:
        headers = [(k, v) for k, v in headers if k != b"date"]
        headers.append((b"date", format_http_date(now).encode("latin-1")))
    if b"age" not in names:
        headers = [(k, v) for k, v in headers if k != b"age"]
    return CacheEntry(
        status=entry.status,
        headers=headers,
        body=entry.body,
        request_time=request_time or now,
        response_time=now,
        expires_at=0.0,
    )
