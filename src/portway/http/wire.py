"""HTTP/1.1 serialisation helpers shared by the server and client sides."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from portway.http.headers import Headers

#: the request methods the data plane keeps ready-made ``str``/``bytes`` forms of (others
#: are decoded/encoded per request)
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE")
REASONS: Final[dict[int, bytes]] = {s.value: s.phrase.encode() for s in HTTPStatus}
LAST_CHUNK: Final = b"0\r\n\r\n"


def status_line(status: int, reason: bytes = b"") -> bytes:
    standard = REASONS.get(status, b"Unknown")
    if not reason or reason == standard:
        # the usual case, remembered: formatting costs more than the whole lookup
        line = _LINES.get(status)
        if line is None:
            line = _LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, standard)
        return line
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


#: status lines with the standard reason phrase, by status (at most the 1000 codes)
_LINES: Final[dict[int, bytes]] = {}


def append_fields(parts: list[bytes], fields: list[tuple[bytes, bytes]]) -> int:
    """Append ``name: value CRLF`` pieces for ``fields`` to ``parts`` (to be joined once);
    return their length in bytes. Appends, not ``parts += (k, b": ", v, CRLF)``: compiled,
    that builds and concatenates a tuple per field."""
    size = 0
    for k, v in fields:
        parts.append(k)
        parts.append(b": ")
        parts.append(v)
        parts.append(b"\r\n")
        size += len(k) + len(v)
    return size + 4 * len(fields)


def head_bytes(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [status_line(status, reason)]
    append_fields(parts, headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Headers | None) -> bytes:
    if not trailers:
        return LAST_CHUNK
    parts = [b"0\r\n"]
    append_fields(parts, trailers.raw())
    parts.append(b"\r\n")
    return b"".join(parts)


def valid_reason(reason: bytes) -> bool:
    return all(b == 0x09 or 0x20 <= b < 0x7F or b >= 0x80 for b in reason)


#: RFC 9110 §6.5.1 fields a trailer section must not carry (framing, routing, authentication,
#: request modifiers, content handling) plus what the gateway itself asserts about the client
FORBIDDEN_TRAILERS: Final = frozenset(
    {
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-encoding",
        b"content-length",
        b"content-range",
        b"content-type",
        b"cookie",
        b"expect",
        b"forwarded",
        b"host",
        b"if-match",
        b"if-modified-since",
        b"if-none-match",
        b"if-range",
        b"if-unmodified-since",
        b"keep-alive",
        b"max-forwards",
        b"pragma",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"range",
        b"set-cookie",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"via",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-real-ip",
    }
)
