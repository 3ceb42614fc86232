"""Field parsing for the cache: Cache-Control, HTTP-dates, delta-seconds, entity-tags, lists.

Everything here is pure and total: malformed input yields ``None`` or an empty result, never
an exception, because these values come straight from clients and upstreams.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

#: RFC 9111 §1.2.2: delta-seconds larger than this are treated as this value
DELTA_MAX = 2147483648

_TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Directives:
    """Parsed Cache-Control directives.

    ``values`` maps each lower-cased directive name to the value of its *first* occurrence
    (``None`` for a bare directive); RFC 9111 §4.2.1 lets a cache use the first of several
    conflicting values. ``lists`` holds the field names of the qualified ``no-cache`` and
    ``private`` forms, accumulated over all occurrences.
    """

    values: dict[str, str | None] = field(default_factory=dict)
    lists: dict[str, frozenset[str]] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.values

    def seconds(self, name: str) -> int | None:
        """The directive's delta-seconds; ``None`` when absent, ``-1`` when malformed."""
        if name not in self.values:
            return None
        return parse_delta(self.values[name])

    def field_names(self, name: str) -> frozenset[str]:
        return self.lists.get(name, frozenset())

    def bare(self, name: str) -> bool:
        """Present without field names (``no-cache`` rather than ``no-cache="x"``)."""
        return name in self.values and name not in self.lists


def parse_delta(value: str | None) -> int:
    """delta-seconds (RFC 9111 §1.2.2); ``-1`` for anything that is not 1*DIGIT."""
    if value is None or not _DIGITS.fullmatch(value):
        return -1
    n = int(value)
    return DELTA_MAX if n > DELTA_MAX else n


def _split_quoted(text: str) -> Iterable[str]:
    """Split on commas that are not inside a quoted-string."""
    start = 0
    in_quote = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif in_quote and ch == "\\":
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == "," and not in_quote:
            yield text[start:i]
            start = i + 1
    yield text[start:]


def _unquote(v: str) -> str | None:
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        inner = v[1:-1]
        return re.sub(r"\\(.)", r"\1", inner)
    if v.startswith('"'):
        return None
    return v


def parse_cache_control(values: Iterable[str]) -> Directives:
    """Parse every Cache-Control field line into :class:`Directives`.

    A directive is ``token [ "=" ( token / quoted-string ) ]`` with no whitespace around
    ``=`` (RFC 9111 §5.2); malformed members are ignored rather than guessed at.
    """
    out: dict[str, str | None] = {}
    lists: dict[str, set[str]] = {}
    for line in values:
        for member in _split_quoted(line):
            member = member.strip(" \t")
            if not member:
                continue
            name, eq, raw = member.partition("=")
            if not _TCHAR.fullmatch(name):
                continue
            name = name.lower()
            value: str | None = None
            if eq:
                if not raw or raw[0] in " \t":
                    continue
                value = _unquote(raw)
                if value is None or (not raw.startswith('"') and not _TCHAR.fullmatch(raw)):
                    continue
            if name in ("no-cache", "private") and value is not None:
                names = {n.strip().lower() for n in value.split(",") if n.strip()}
                lists.setdefault(name, set()).update(names)
            if name not in out:
                out[name] = value
            elif name in ("no-cache", "private") and value is None:
                # a bare occurrence wins over a qualified one: the stricter meaning applies
                out[name] = None
    for name in ("no-cache", "private"):
        if name in out and out[name] is None and name in lists:
            del lists[name]
    return Directives(out, {k: frozenset(v) for k, v in lists.items()})


# --- HTTP-date (RFC 9110 §5.6.7) -------------------------------------------------------------

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_IMF = re.compile(
    r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) ([A-Za-z]{3}) (\d{4}) "
    r"(\d{2}):(\d{2}):(\d{2}) GMT$"
)
_RFC850 = re.compile(
    r"^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    r"(\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$"
)
_ASCTIME = re.compile(
    r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$"
)


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch, or ``None`` when ``value`` is not a valid HTTP-date."""
    if value is None:
        return None
    v = value.strip()
    try:
        m = _IMF.match(v)
        if m:
            day, mon, year, hh, mm, ss = m.groups()
        else:
            m = _RFC850.match(v)
            if m:
                day, mon, yy, hh, mm, ss = m.groups()
                # RFC 9110: a two-digit year more than 50 years ahead is in the past century
                year = str(2000 + int(yy)) if int(yy) < 70 else str(1900 + int(yy))
            else:
                m = _ASCTIME.match(v)
                if not m:
                    return None
                mon, day, hh, mm, ss, year = m.groups()
        month = _MONTHS.get(mon.lower())
        if month is None:
            return None
        d, h, mi, s = int(day), int(hh), int(mm), int(ss)
        if not (1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
            return None
        return float(calendar.timegm((int(year), month, d, h, mi, s, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_http_date(ts: float) -> str:
    """IMF-fixdate for ``ts`` seconds since the epoch."""
    import time

    t = time.gmtime(ts)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


# --- lists and entity-tags ------------------------------------------------------------------


def parse_list(values: Iterable[str]) -> list[str]:
    """Members of a comma-separated list field (RFC 9110 §5.6.1), empty members dropped."""
    out: list[str] = []
    for line in values:
        for member in _split_quoted(line):
            member = member.strip(" \t")
            if member:
                out.append(member)
    return out


def parse_age(values: list[str]) -> int:
    """The Age value (first member of the first line); 0 when absent or malformed."""
    members = parse_list(values[:1])
    if not members:
        return 0
    n = parse_delta(members[0])
    return n if n >= 0 else 0


_ETAG = re.compile(r'^(W/)?"[\x21\x23-\x7e\x80-\xff]*"$')


def parse_etags(values: Iterable[str]) -> list[str] | None:
    """Entity-tags of an If-None-Match style field; ``None`` stands for ``*``."""
    out: list[str] = []
    for member in parse_list(values):
        if member == "*":
            return None
        if _ETAG.match(member):
            out.append(member)
    return out


def weak_match(a: str, b: str) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2): opaque-tags equal, W/ prefixes ignored."""
    return a.removeprefix("W/") == b.removeprefix("W/")


def is_valid_etag(value: str | None) -> bool:
    return value is not None and _ETAG.match(value.strip()) is not None
