"""Request validation shared by HTTP/1.1 and HTTP/2 (RFC 9110 §5.5, RFC 9112 §3.2, RFC 9113
§8.2.1 and §8.3.1).

One statement of what a request the gateway forwards may contain, whatever protocol carried
it. Both listeners end up forwarding the request on an HTTP/1.1 hop, so a byte that would
change how that hop's request line or header section reads must never get through:

- the request target (``:path``) is visible ASCII only (``0x21``-``0x7e``): no space (which
  would end the target and let the rest read as a version), no control, no byte ≥ 0x80;
- a field name is a token (RFC 9110 §5.1), lower-case on HTTP/2 (RFC 9113 §8.2.1);
- a field value has no control byte but HTAB (0x00-0x08, 0x0a-0x1f) and no DEL (0x7f); obs-text
  (0x80-0xff) stays allowed as RFC 9110 §5.5 allows it. On HTTP/2 a value also has no leading
  or trailing whitespace.

On HTTP/1.1, llhttp in strict mode already enforces exactly these byte rules for the request
line and the header section (in C, before Python sees the bytes); ``ServerConnection`` uses
the messages here for what it refuses, and ``tests/http/test_request_validation.py`` checks
both listeners refuse the same corpus. On HTTP/2, whose binary framing carries any byte,
``h2.py`` calls :func:`check_target` and :func:`check_fields` on every request.

Pure functions, no I/O: each raises :class:`~portway.errors.BadRequestError` naming what was
wrong (never echoing the offending bytes unescaped).
"""

from __future__ import annotations

from typing import Final

from portway.errors import BadRequestError

#: bytes allowed in a request target: visible ASCII (RFC 3986 characters plus the few that
#: servers traditionally accept unescaped in queries, like ``"`` or ``{``)
TARGET_OK: Final = bytes(range(0x21, 0x7F))
#: RFC 9110 §5.6.2 tchar, lower-case letters only (HTTP/2 names; HTTP/1.1 names are
#: lower-cased by the server after llhttp checked them as tokens)
NAME_OK: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
#: tchar in either case (HTTP/1.1 field names, methods)
TOKEN_OK: Final = NAME_OK + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: the bytes a field value must not contain: controls but HTAB, and DEL
VALUE_BAD: Final = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
_VALUE_BAD_SET: Final = frozenset(VALUE_BAD)
#: field values kept as they are: everything but VALUE_BAD
VALUE_OK: Final = bytes(b for b in range(256) if b not in _VALUE_BAD_SET)

INVALID_TARGET: Final = "invalid character in request target"


def _byte(b: int) -> str:
    return f"0x{b:02x}"


def check_target(target: bytes) -> None:
    """Refuse a request target with a byte outside visible ASCII (space, controls, DEL,
    0x80-0xff); the message names the first such byte and where it is."""
    if target.translate(None, TARGET_OK):
        bad = next(i for i, b in enumerate(target) if b < 0x21 or b > 0x7E)
        where = "query" if 63 in target[:bad] else "path"
        raise BadRequestError(
            f"{INVALID_TARGET}: byte {_byte(target[bad])} at offset {bad} of the {where}"
        )


def field_problem(name: bytes, value: bytes, h2: bool = False) -> str | None:
    """What is wrong with one header field, or None. ``h2``: the stricter HTTP/2 rules
    (lower-case names, no surrounding whitespace in values)."""
    if not name:
        return "empty header field name"
    allowed = NAME_OK if h2 else TOKEN_OK
    if name.translate(None, allowed):
        bad = next(b for b in name if b not in allowed)
        return f"invalid character {_byte(bad)} in a header field name"
    if value.translate(None, VALUE_OK):
        bad = next(b for b in value if b in _VALUE_BAD_SET)
        return f"invalid character {_byte(bad)} in the value of header field {_shown(name)}"
    if h2 and value and (value[0] in (0x20, 0x09) or value[-1] in (0x20, 0x09)):
        return f"whitespace around the value of header field {_shown(name)}"
    return None


def check_fields(fields: list[tuple[bytes, bytes]], h2: bool = False) -> None:
    """Refuse the request when one of ``fields`` breaks :func:`field_problem`'s rules."""
    for name, value in fields:
        problem = field_problem(name, value, h2)
        if problem is not None:
            raise BadRequestError(problem)


#: the methods the HTTP/1.1 listener's parser takes on an ``HTTP/1.x`` request line: llhttp's
#: (the httptools build's) HTTP names, upper case only. Not its RTSP-only names (DESCRIBE,
#: SETUP, ...: "Invalid method for HTTP/x.x request") nor PRI (the HTTP/2 preface).
#: HTTP/2 and HTTP/3 (``streamreq.check_head``) take exactly these, so a request reaches an
#: upstream only with a method an llhttp upstream would parse; CONNECT is answered 501
#: later. ``tests/http/test_request_rules.py`` checks the set against httptools itself.
METHODS_OK: Final = frozenset(
    {
        *(b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"),
        *(b"CONNECT", b"QUERY", b"PURGE", b"LINK", b"UNLINK", b"SOURCE"),
        # WebDAV (RFC 4918, 3253, 3648, 3744, 5842, 5323) and CalDAV (RFC 4791)
        *(b"COPY", b"LOCK", b"MKCOL", b"MOVE", b"PROPFIND", b"PROPPATCH", b"SEARCH"),
        *(b"UNLOCK", b"BIND", b"REBIND", b"UNBIND", b"ACL", b"REPORT", b"MKACTIVITY"),
        *(b"CHECKOUT", b"MERGE", b"MKCALENDAR"),
        # UPnP
        *(b"M-SEARCH", b"NOTIFY", b"SUBSCRIBE", b"UNSUBSCRIBE"),
    }
)


def _shown(name: bytes) -> str:
    # a valid token is safe to show; anything else is summarised
    ok = not name.translate(None, TOKEN_OK) and len(name) <= 64
    return name.decode("ascii") if ok else "(unprintable)"
