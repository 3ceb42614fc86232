"""Targeted cache-control fields (RFC 9213): ``CDN-Cache-Control`` and our own.

A targeted field is a Structured Fields Dictionary (RFC 8941 §3.2) of cache directives. The
cache has a *target list* (``targeted_cache_control``, most specific first); the first field
of the list that is present, parses and is non-empty replaces ``Cache-Control`` *and*
``Expires`` for this cache, response by response (RFC 9213 §2.1). A field that does not parse,
or carries a known directive with a value of the wrong type (``max-age="60"``, ``no-store=1``),
is ignored as a whole, as RFC 9213 §2.2 says of parsing errors and as the cache-tests suite
expects of wrong types.

Everything here is pure and total: malformed input yields ``None``, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence

from portway.plugins.cache.directives import DELTA_MAX, Directives

#: an SF bare item: int, float (Decimal), str (String or Token), bytes, bool
Item = int | float | str | bytes | bool
#: a dictionary member's value: an item, or an inner list of items (parameters are dropped)
Member = Item | list[Item]

_KEY_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz*")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.*")
_ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN_FIRST = frozenset(_ALPHA + "*")
_TOKEN_CHARS = frozenset(_ALPHA + "0123456789!#$%&'*+-.^_`|~:/")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?")


class _Fail(Exception):
    """A parse error (caught inside this module only)."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip_sp(self) -> None:
        while self.peek() == " ":
            self.i += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.i += 1

    def key(self) -> str:
        if self.peek() not in _KEY_FIRST or not self.peek():
            raise _Fail
        start = self.i
        while self.peek() and self.peek() in _KEY_CHARS:
            self.i += 1
        return self.s[start : self.i]

    def bare_item(self) -> Item:
        c = self.peek()
        if c == "-" or (c.isdigit() and c.isascii()):
            return self.number()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            return self.boolean()
        if c and c in _TOKEN_FIRST:
            return self.token()
        raise _Fail

    def number(self) -> int | float:
        m = _NUMBER.match(self.s, self.i)
        if m is None:
            raise _Fail
        text = m.group(0)
        self.i = m.end()
        digits = text.lstrip("-")
        if "." not in digits:
            if len(digits) > 15:
                raise _Fail
            return int(text)
        whole, _, frac = digits.partition(".")
        if not whole or len(whole) > 12 or not frac or len(frac) > 3:
            raise _Fail
        return float(text)

    def string(self) -> str:
        self.i += 1
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                nxt = self.peek()
                if nxt not in ('"', "\\") or not nxt:
                    raise _Fail
                out.append(nxt)
                self.i += 1
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise _Fail
            else:
                out.append(c)
        raise _Fail

    def token(self) -> str:
        start = self.i
        self.i += 1
        while self.peek() and self.peek() in _TOKEN_CHARS:
            self.i += 1
        return self.s[start : self.i]

    def byte_sequence(self) -> bytes:
        end = self.s.find(":", self.i + 1)
        if end < 0:
            raise _Fail
        data = self.s[self.i + 1 : end]
        self.i = end + 1
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _Fail from None

    def boolean(self) -> bool:
        v = self.s[self.i + 1 : self.i + 2]
        if v not in ("0", "1"):
            raise _Fail
        self.i += 2
        return v == "1"

    def parameters(self) -> None:
        # parsed for validity, then ignored (RFC 9213 §2.2)
        while self.peek() == ";":
            self.i += 1
            self.skip_sp()
            self.key()
            if self.peek() == "=":
                self.i += 1
                self.bare_item()

    def item_or_inner_list(self) -> Member:
        if self.peek() == "(":
            self.i += 1
            items: list[Item] = []
            while True:
                self.skip_sp()
                if self.peek() == ")":
                    self.i += 1
                    self.parameters()
                    return items
                items.append(self.bare_item())
                self.parameters()
                if self.peek() not in (" ", ")"):
                    raise _Fail
        item = self.bare_item()
        self.parameters()
        return item

    def dictionary(self) -> dict[str, Member]:
        out: dict[str, Member] = {}
        self.skip_sp()
        while self.i < len(self.s):
            name = self.key()
            value: Member = True
            if self.peek() == "=":
                self.i += 1
                value = self.item_or_inner_list()
            else:
                self.parameters()
            out[name] = value  # a later duplicate overrides (RFC 8941 §4.2.2)
            self.skip_ows()
            if self.i >= len(self.s):
                return out
            if self.peek() != ",":
                raise _Fail
            self.i += 1
            self.skip_ows()
            if self.i >= len(self.s):
                raise _Fail  # trailing comma
        return out


def parse_dictionary(lines: Sequence[str]) -> dict[str, Member] | None:
    """RFC 8941 Dictionary from one or more field lines; ``None`` on any parse error."""
    text = ", ".join(lines).strip(" ")
    try:
        return _Parser(text).dictionary()
    except _Fail:
        return None


#: directives whose value is delta-seconds (an Integer)
_SECONDS = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
#: directives that only ever have a true Boolean value
_FLAGS = frozenset(
    {
        "no-store",
        "must-revalidate",
        "proxy-revalidate",
        "public",
        "immutable",
        "must-understand",
        "no-transform",
    }
)
#: directives that are true, or a String listing field names
_FIELD_LISTS = frozenset({"no-cache", "private"})


def targeted_directives(lines: Sequence[str]) -> Directives | None:
    """The directives of one targeted field, or ``None`` when it must be ignored (empty,
    unparseable, or a known directive with a value of the wrong type)."""
    d = parse_dictionary(lines)
    if not d:
        return None
    values: dict[str, str | None] = {}
    lists: dict[str, frozenset[str]] = {}
    for name, v in d.items():
        if name in _SECONDS:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                return None
            values[name] = str(min(v, DELTA_MAX))
        elif name in _FLAGS:
            if v is not True:
                return None
            values[name] = None
        elif name in _FIELD_LISTS:
            if v is True:
                values[name] = None
            elif isinstance(v, str) and not isinstance(v, bool):
                names = frozenset(n.strip().lower() for n in v.split(",") if n.strip())
                values[name] = v
                if names:
                    lists[name] = names
            else:
                return None
        else:
            # extension directives are ignored unless understood; keep their text for
            # symmetry with Cache-Control parsing
            values[name] = None if isinstance(v, bool) else str(v)
    return Directives(values, lists)


def select(targets: Iterable[bytes], pairs: Sequence[tuple[bytes, bytes]]) -> Directives | None:
    """The directives of the first field on the target list that is present and valid;
    ``None`` when Cache-Control (and Expires) apply instead."""
    for name in targets:
        lines = [v.decode("latin-1") for k, v in pairs if k == name]
        if lines:
            d = targeted_directives(lines)
            if d is not None:
                return d
    return None
