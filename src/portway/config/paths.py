"""Path forms of ``match.paths``: parsing, validation and literal normalisation.

A path form is one of:

=================== ====================================================================
``=/health``        exact: the request path equals ``/health``
``/users``          prefix on a segment boundary: ``/users``, ``/users/``, ``/users/7``;
                    a trailing ``/`` in the form is ignored, ``/`` matches every path
``/users/{id}``     template: exactly that many segments, ``{id}`` one non-empty segment
``/f/{rest:path}``  template whose last segment captures the remainder (may be empty, may
                    contain ``/``), as Starlette's ``{x:path}``
``~^/v[0-9]+/``     regex (Python :mod:`re`), anchored at the start of the path only
=================== ====================================================================

Literal parts are normalised the way :func:`portway.http.path.normalize_path` normalises
request paths (unreserved escapes decoded, other escapes upper-cased, non-ASCII encoded as
UTF-8), so a form written ``/caf%c3%a9`` or ``/café`` matches the request ``/caf%C3%A9``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["PathForm", "PathKind", "normalize_literal", "parse_path"]

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
# pchar without '%' (RFC 3986 §3.3); anything else in a literal is percent-encoded
_PCHAR = _UNRESERVED | frozenset("!$&'()*+,;=:@")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?\}")


class PathKind(IntEnum):
    """Path form kinds; the value is also the tie-break between template and prefix forms
    with equal literal length (lower wins)."""

    EXACT = 0
    TEMPLATE = 1
    CATCHALL = 2  # template ending in {x:path}
    PREFIX = 3
    REGEX = 4


@dataclass(frozen=True, slots=True)
class PathForm:
    """One parsed path form.

    ``segments`` are the normalised segments after the leading ``/`` (``None`` marks a
    ``{param}`` segment; a catch-all segment is not included); ``params`` maps segment index →
    name; ``catchall`` is the name of the trailing ``{x:path}`` capture; ``literal`` is the
    normalised literal text (exact path, or prefix without trailing ``/``: ``""`` for ``/``);
    ``literal_len`` counts literal characters (placeholders removed), the priority measure.
    """

    raw: str
    kind: PathKind
    literal: str = ""
    segments: tuple[str | None, ...] = ()
    params: tuple[tuple[int, str], ...] = ()
    catchall: str | None = None
    literal_len: int = 0
    regex: re.Pattern[str] | None = None


def normalize_literal(text: str) -> str:
    """Normalise literal path text like the data plane normalises request paths."""
    if all(c in _PCHAR or c == "/" for c in text):
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "%" and i + 2 < n and text[i + 1] in _HEXDIGITS and text[i + 2] in _HEXDIGITS:
            ch = chr(int(text[i + 1 : i + 3], 16))
            out.append(ch if ch in _UNRESERVED else "%" + text[i + 1 : i + 3].upper())
            i += 3
            continue
        if c in _PCHAR or c == "/":
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8"))
        i += 1
    return "".join(out)


def _template(raw: str) -> PathForm:
    parts = raw[1:].split("/")
    segments: list[str | None] = []
    params: list[tuple[int, str]] = []
    catchall: str | None = None
    names: set[str] = set()
    literal_len = 1  # the leading '/'
    for i, part in enumerate(parts):
        if i:
            literal_len += 1
        if "{" not in part and "}" not in part:
            seg = normalize_literal(part)
            segments.append(seg)
            literal_len += len(seg)
            continue
        m = _PARAM.fullmatch(part)
        if m is None:
            raise ValueError(
                f"path {raw!r}: a parameter must fill a whole segment, as /users/{{id}}"
                " or /files/{rest:path}"
            )
        name, conv = m.group(1), m.group(2)
        if name in names:
            raise ValueError(f"path {raw!r}: duplicate parameter {name!r}")
        names.add(name)
        if conv in (None, "str"):
            params.append((i, name))
            segments.append(None)
        elif conv == "path":
            if i != len(parts) - 1:
                raise ValueError(f"path {raw!r}: {{{name}:path}} must be the last segment")
            catchall = name
        else:
            raise ValueError(f"path {raw!r}: unknown converter {conv!r} (use str or path)")
    return PathForm(
        raw=raw,
        kind=PathKind.CATCHALL if catchall is not None else PathKind.TEMPLATE,
        segments=tuple(segments),
        params=tuple(params),
        catchall=catchall,
        literal_len=literal_len,
    )


def parse_path(raw: str) -> PathForm:
    """Parse one ``match.paths`` entry; raise ``ValueError`` with a precise message."""
    if raw.startswith("~"):
        try:
            rx = re.compile(raw[1:])
        except re.error as e:
            raise ValueError(f"invalid regex {raw[1:]!r}: {e}") from e
        return PathForm(raw=raw, kind=PathKind.REGEX, regex=rx)
    if raw.startswith("="):
        text = raw[1:]
        if not text.startswith("/"):
            raise ValueError(f"exact path {raw!r} must start with '=/'")
        if "{" in text or "}" in text:
            # a template already matches whole paths only: `=/pages/product/{id}` is the
            # template `/pages/product/{id}` (a catch-all would contradict the `=`)
            form = _template(text)
            if form.catchall is not None:
                raise ValueError(f"exact path {raw!r} cannot end in a catch-all parameter")
            return form
        lit = normalize_literal(text)
        return PathForm(raw=raw, kind=PathKind.EXACT, literal=lit, literal_len=len(lit))
    if not raw.startswith("/"):
        raise ValueError(f"path {raw!r} must start with '/', '=/' or '~'")
    if "{" in raw or "}" in raw:
        return _template(raw)
    lit = normalize_literal(raw.rstrip("/"))
    segs = tuple(lit[1:].split("/")) if lit else ()
    return PathForm(
        raw=raw,
        kind=PathKind.PREFIX,
        literal=lit,
        segments=segs,
        literal_len=len(lit),
    )
