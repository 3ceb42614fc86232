"""A header list that keeps wire order and duplicates.

Names are stored lower-cased as ``bytes`` (HTTP field names are case-insensitive; lower-casing
once at parse time makes every lookup a plain comparison, as Envoy and HTTP/2 do). Values are
raw ``bytes`` so the proxy can forward them without decoding. The ``str`` API is for plugins;
the ``*_raw`` methods are for the data plane.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

#: RFC 9110 §7.6.1 connection-specific fields plus the legacy ones proxies must drop.
HOP_BY_HOP: Final[frozenset[bytes]] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


#: Connection field values (as received, or several joined with ", ") that name no field to
#: drop: the usual ones, recognised without splitting them into tokens
PLAIN_CONNECTION: Final[frozenset[bytes]] = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"keep-alive, close"}
)


def _b(name: str | bytes) -> bytes:
    return name.lower() if isinstance(name, bytes) else name.lower().encode("latin-1")


#: the list of :meth:`Headers.unread` headers until built (never mutated: built first)
_UNREAD: Final[list[tuple[bytes, bytes]]] = []


def field_list(src: bytes, pos: int) -> list[tuple[bytes, bytes]]:
    """``(lower-cased name, value)`` of the field lines of ``src`` (a whole head llhttp
    accepted: a line ends only at CR LF, a field line is a token, a colon and a value) from
    ``pos`` to its final empty line; values without OWS either side. Read byte by byte
    (compiled), as ``http/serverlite.py:scan_head`` does."""
    end = len(src) - 2
    low = src.lower()
    items: list[tuple[bytes, bytes]] = []
    while pos < end:
        k = pos
        while src[k] != 58:  # b":"
            k += 1
        v = k + 1
        while src[v] == 32 or src[v] == 9:
            v += 1
        e = v
        while src[e] != 13:
            e += 1
        name = low[pos:k]
        pos = e + 2
        while e > v and (src[e - 1] == 32 or src[e - 1] == 9):
            e -= 1
        items.append((name, src[v:e]))
    return items


class Headers:
    """Ordered multi-map of header fields; mutable, cheap to copy.

    Headers made by :meth:`unread` hold a validated head's bytes and build their list on
    first use (every method does that first): a request the task-free path forwards with
    its own lines (``forwarding.forward_lite_lines``) and nobody reads never has one."""

    __slots__ = ("_at", "_items", "_src")

    def __init__(
        self,
        items: Iterable[tuple[bytes, bytes]] | None = None,
        _own: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        # ``_own``: :meth:`adopt`'s list, taken as it is (no empty list made and dropped)
        if _own is not None:
            self._items: list[tuple[bytes, bytes]] = _own
        else:
            self._items = list(items) if items is not None else []
        #: the head of :meth:`unread` headers until their list is built, else None
        self._src: bytes | None = None
        self._at = 0

    @staticmethod
    def unread(src: bytes, at: int) -> Headers:
        """Headers of the field lines of ``src`` (a whole request head llhttp accepted,
        ending with its empty line, with no "_" in it) from offset ``at``, built on first
        use exactly as the server's parsers build them: lower-cased names, values without
        OWS either side (``http/serverlite.py:scan_head``)."""
        h = Headers(None, _UNREAD)
        h._src = src
        h._at = at
        return h

    def unread_head(self) -> bytes | None:
        """The head of :meth:`unread` headers whose list was never built (so nothing read
        or edited them), else None."""
        return self._src

    def _load(self) -> None:
        src = self._src
        if src is not None:
            self._items = field_list(src, self._at)
            self._src = None

    @staticmethod
    def adopt(items: list[tuple[bytes, bytes]]) -> Headers:
        """Headers over ``items`` itself, not a copy: for a fresh list nobody else keeps
        (the parsers' per-message lists)."""
        return Headers(None, items)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        return cls((_b(k), v.encode("latin-1")) for k, v in pairs)

    # --- raw (bytes) API used by the data plane -------------------------------------------
    def get_raw(self, name: bytes) -> bytes | None:
        if self._src is not None:
            self._load()
        for k, v in self._items:
            if k == name:
                return v
        return None

    def add_raw(self, name: bytes, value: bytes) -> None:
        if self._src is not None:
            self._load()
        self._items.append((name, value))

    def raw(self) -> list[tuple[bytes, bytes]]:
        """The underlying list; callers may read it but must not keep it across requests."""
        if self._src is not None:
            self._load()
        return self._items

    # --- str API ---------------------------------------------------------------------------
    def get(self, name: str | bytes, default: str | None = None) -> str | None:
        v = self.get_raw(_b(name))
        return v.decode("latin-1") if v is not None else default

    def get_all(self, name: str | bytes) -> list[str]:
        if self._src is not None:
            self._load()
        key = _b(name)
        return [v.decode("latin-1") for k, v in self._items if k == key]

    def add(self, name: str | bytes, value: str) -> None:
        if self._src is not None:
            self._load()
        self._items.append((_b(name), value.encode("latin-1")))

    def set(self, name: str | bytes, value: str) -> None:
        if self._src is not None:
            self._load()
        key = _b(name)
        self._items = [(k, v) for k, v in self._items if k != key]
        self._items.append((key, value.encode("latin-1")))

    def remove(self, name: str | bytes) -> bool:
        if self._src is not None:
            self._load()
        key = _b(name)
        before = len(self._items)
        self._items = [(k, v) for k, v in self._items if k != key]
        return len(self._items) != before

    def remove_many(self, names: Iterable[bytes]) -> None:
        if self._src is not None:
            self._load()
        keys = frozenset(names)
        # the pairs themselves, not new tuples unpacked and built again
        self._items = [kv for kv in self._items if kv[0] not in keys]

    def rename(self, old: str | bytes, new: str | bytes) -> None:
        if self._src is not None:
            self._load()
        o, n = _b(old), _b(new)
        self._items = [(n if k == o else k, v) for k, v in self._items]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str | bytes):
            return False
        return self.get_raw(_b(name)) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        if self._src is not None:
            self._load()
        for k, v in self._items:
            yield k.decode("latin-1"), v.decode("latin-1")

    def __len__(self) -> int:
        if self._src is not None:
            self._load()
        return len(self._items)

    def copy(self) -> Headers:
        if self._src is not None:
            self._load()
        return Headers(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


def connection_tokens(headers: Headers) -> set[bytes]:
    """Lower-cased tokens of every ``Connection`` field."""
    out: set[bytes] = set()
    for k, v in headers.raw():
        if k == b"connection":
            out |= value_tokens(v)
    return out


def value_tokens(value: bytes) -> set[bytes]:
    """Lower-cased, non-empty tokens of one comma-separated field value (e.g. the
    ``Connection`` values the parser gathered, joined with ``", "``)."""
    return {t for t in (x.strip().lower() for x in value.split(b",")) if t}


def strip_hop_by_hop(headers: Headers) -> set[bytes]:
    """Remove hop-by-hop fields (and those named in ``Connection``); return the tokens seen."""
    tokens = connection_tokens(headers)
    drop = HOP_BY_HOP | tokens
    items = headers.raw()
    if any(k in drop for k, _ in items):
        headers.remove_many(drop)
    return tokens
