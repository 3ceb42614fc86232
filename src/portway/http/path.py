"""Request-target path normalisation (RFC 3986 §5.2.4, §6.2.2).

The router, plugins and the upstream all see the same normalised path, so a path that slips past
a route's match can never reach a different resource upstream (``/public/../admin``).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote_to_bytes

from portway.errors import BadRequestError
from portway.http.memo import remember

_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
# bytes allowed literally in a path by RFC 3986 (pchar + "/"); others must be percent-encoded
_PATH_OK: Final = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/%")
#: the same set as bytes, for ``bytes.translate`` (one C pass instead of a Python-level scan)
_PATH_OK_BYTES: Final = bytes(sorted(_PATH_OK))


class EncodedSlashError(BadRequestError):
    code = "encoded_slash"


def normalize_path(raw: bytes, allow_encoded_slashes: bool = False) -> str:
    """:func:`normalize` with a bounded memo of recent results (APIs repeat their paths; a
    lookup costs a fraction of the checks). Only short paths that normalised cleanly are
    remembered, so the memo is small and cannot change an answer."""
    memo = _MEMO_ENC if allow_encoded_slashes else _MEMO
    hit = memo.get(raw)
    if hit is not None:
        return hit
    path = normalize(raw, allow_encoded_slashes)
    if len(raw) <= _MEMO_MAX_LEN:
        remember(memo, raw, path, _MEMO_SIZE)
    return path


class _Percent:
    """The last path asked about in :func:`has_percent`, and the answer (one tuple)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[str, bool] = ("", False)


_PERCENT: Final = _Percent()


def has_percent(path: str) -> bool:
    """``"%" in path``, remembered for the last path object: the server's parser hands a
    repeated path as the same object (``serverparse._Last``), and the task-free path asks
    twice per request (a ``str`` search is a call of ~130 instructions)."""
    last = _PERCENT.last
    if path is last[0]:
        return last[1]
    pct = "%" in path
    _PERCENT.last = (path, pct)
    return pct


_MEMO: Final[dict[bytes, str]] = {}
_MEMO_ENC: Final[dict[bytes, str]] = {}
_MEMO_SIZE: Final = 1024
_MEMO_MAX_LEN: Final = 256


def normalize(raw: bytes, allow_encoded_slashes: bool = False) -> str:
    """Normalise a raw origin-form path; raise 400 on anything ambiguous.

    - percent-encoded unreserved characters are decoded (``%7E`` → ``~``, ``%2e`` → ``.``) and
      other escapes upper-cased, so ``%2e%2e`` cannot smuggle a dot segment past the router;
    - ``%2F`` / ``%5C`` are rejected unless ``allow_encoded_slashes``; ``%00`` and malformed
      escapes always are; a literal backslash or non-ASCII byte is rejected, and so are
      escapes that do not decode to valid UTF-8 (overlong ``%C0%AE``);
    - dot segments are removed and empty segments (``//``) merged; a dot segment carrying
      path parameters (``..;x``) is rejected.
    """
    if not raw.startswith(b"/"):
        raise BadRequestError("request target must be an absolute path")
    # every dot segment starts with "/." (raw starts with "/"), so "/a.json" needs no loop
    # (bytes.find, not ``in``: ``x in bytes`` first tries x as an int and formats an error)
    fast = raw.find(b"%") < 0 and raw.find(b"/.") < 0 and raw.find(b"//") < 0
    if fast:
        if raw.translate(None, _PATH_OK_BYTES):
            raise BadRequestError(_bad_char(raw))
        return raw.decode("ascii")
    out = bytearray()
    high = False
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # %
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                raise BadRequestError(_bad_escape(raw, i))
            v = int(raw[i + 1 : i + 3], 16)
            if v == 0:
                raise BadRequestError("percent-encoded NUL (%00) in path")
            if v in _UNRESERVED:
                out.append(v)
            else:
                high |= v >= 0x80
                if v in (0x2F, 0x5C) and not allow_encoded_slashes:
                    raise EncodedSlashError("encoded '/' or '\\' in path is not allowed")
                out += b"%" + raw[i + 1 : i + 3].upper()
            i += 3
            continue
        if c not in _PATH_OK:
            raise BadRequestError(_bad_char(raw))
        out.append(c)
        i += 1
    if high:
        _check_utf8(out)
    return _remove_dots(out.decode("ascii"))


def _bad_char(raw: bytes) -> str:
    """The message for the first byte of ``raw`` not allowed literally in a path."""
    i = 0
    while raw[i] in _PATH_OK:
        i += 1
    c = raw[i]
    if c == 0x5C:
        return "backslash ('\\') in path is not allowed"
    shown = f"'{chr(c)}' " if 0x21 <= c < 0x7F else ""
    return f"invalid character {shown}(0x{c:02x}) at offset {i} of the path"


def _bad_escape(raw: bytes, i: int) -> str:
    """The message for a '%' at ``i`` not followed by two hex digits (``%uff0e``: the
    IIS-only %u form)."""
    got = raw[i : i + 3].decode("ascii", "replace")
    if raw[i + 1 : i + 2] in (b"u", b"U"):
        return f"'%u' escape ({got}...) in path is not allowed: use UTF-8 percent-encoding"
    return f"malformed percent-encoding {got!r} in path: '%' must be followed by two hex digits"


def _check_utf8(path: bytearray) -> None:
    # Overlong forms (%C0%AE = ".") and other invalid UTF-8 decode to dots or slashes in
    # lenient upstream decoders: the escapes stay encoded here, so refuse what is not UTF-8.
    try:
        unquote_to_bytes(bytes(path)).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError(
            "percent-encoded path is not valid UTF-8 (overlong or invalid byte sequence)"
        ) from None


def _remove_dots(path: str) -> str:
    segs = path.split("/")
    stack: list[str] = []
    for seg in segs[1:]:
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if stack:
                stack.pop()
            continue
        if seg[0] == "." and ";" in seg and seg.partition(";")[0] in (".", ".."):
            # "..;x" is a literal segment per RFC 3986 but a dot segment to servers that strip
            # path parameters first (Tomcat, Jetty, Spring): two readings, so refuse it
            raise BadRequestError(
                "dot segment with path parameters ('..;' or '.;') in path is not allowed"
            )
        stack.append(seg)
    trailing = segs[-1] in ("", ".", "..") and len(segs) > 2
    out = "/" + "/".join(stack)
    if trailing and stack:
        out += "/"
    return out
