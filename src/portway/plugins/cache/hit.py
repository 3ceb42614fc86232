"""A cache hit in few steps: memoised keys, a prebuilt head, the fresh check without parsing.

A hit used to hash its primary key (SHA-256 over the key parts), read the Vary index, hash
the variant key, read the entry, judge it into an :class:`~.policy.Assessment` and build a
:class:`~portway.http.headers.Headers` of the stored fields. Here:

- :class:`KeyMemo` remembers both keys by the request parts they are hashed from (bounded;
  cleared whole when full), so a repeated URL costs a tuple and a dict get per key;
- :func:`wire_of` renders an entry's stored fields (minus Age, Content-Length, the cache's
  own and the stripped targeted fields) once into ``name: value CRLF`` lines, kept on the
  entry; :func:`hit_response` answers with them as a response's raw fields
  (``Response.set_raw_fields``), so the task-free path writes them as they are and the
  general path parses them on first use into exactly the fields :func:`~.answers.answer`
  gives. Age is computed per hit (RFC 9111 §4.2.3); Date is the stored one (§4: a cache
  sends the stored Date; it adds a Date only when the response had none, at store time).

Compiled with mypyc (setup.py ``HOT_MODULES``): :class:`~.hooks.CacheHooks` calls these
directly on every hit.
"""

from __future__ import annotations

from typing import Final

from portway.http.models import Request, Response
from portway.plugins.cache.entry import CacheEntry, VaryIndex
from portway.plugins.cache.keys import KeyBuilder, request_url, variant_key
from portway.plugins.cache.memory import MemoryStore
from portway.plugins.cache.policy import _REPLACED, Pairs

#: memoised keys kept per plugin before the memo starts afresh
MEMO_MAX: Final = 4096


class KeyMemo:
    """Primary keys by (route, scheme, host, path, query) — only for keys built from the
    URL alone — and variant keys by (primary, generation, the request's fields that the
    Vary index names)."""

    __slots__ = ("_names", "_primary", "_variant")

    def __init__(self) -> None:
        self._primary: dict[tuple[str, str, str, str, bytes], str] = {}
        self._variant: dict[tuple[str, str, tuple[tuple[bytes, bytes], ...]], str] = {}
        self._names: dict[tuple[str, ...], frozenset[bytes]] = {}

    def request_key(self, keys: KeyBuilder, route: str, req: Request) -> str:
        """``keys.primary`` of ``req``'s URL (``keys`` must be ``url_only``)."""
        k = (route, req.scheme, req.host, req.path, req.query)
        key = self._primary.get(k)
        if key is None:
            key = keys.primary(route, request_url(req), req, None)
            if len(self._primary) >= MEMO_MAX:
                self._primary.clear()
            self._primary[k] = key
        return key

    def variant(
        self, primary: str, gen: str, names: tuple[str, ...], pairs: Pairs
    ) -> tuple[str | None, tuple[str, str, tuple[tuple[bytes, bytes], ...]]]:
        """The memoised variant key (``None`` if not yet) and what it is memoised under."""
        wanted = self._names.get(names)
        if wanted is None:
            wanted = self._names[names] = frozenset(n.encode("latin-1") for n in names)
        k = (primary, gen, tuple([kv for kv in pairs if kv[0] in wanted]))
        return self._variant.get(k), k

    def remember_variant(
        self, k: tuple[str, str, tuple[tuple[bytes, bytes], ...]], key: str
    ) -> None:
        if len(self._variant) >= MEMO_MAX:
            self._variant.clear()
        self._variant[k] = key


def lookup_mem(
    mem: MemoryStore, memo: KeyMemo, key: str, pairs: Pairs
) -> tuple[CacheEntry | None, VaryIndex | None]:
    """The plugin's ``_lookup`` on the memory store without a coroutine (the invalidation
    version is left to the caller): a dict get per object, the variant key memoised.
    Returns the entry and the Vary index it came through."""
    obj = mem.hit(key)
    if obj is None or isinstance(obj, CacheEntry):
        return obj, None
    vkey, memo_key = memo.variant(key, obj.gen, obj.names, pairs)
    if vkey is None:
        vkey = variant_key(key, obj.gen, obj.names, pairs)
        memo.remember_variant(memo_key, vkey)
    found = mem.hit(vkey)
    return (found if isinstance(found, CacheEntry) else None), obj


class Wire:
    """An entry's stored fields as header lines, for one ``strip`` list; with the entry's
    status and body, and (once :meth:`note` ran) its freshness data for one ``windows``,
    so a hit reads compiled attributes only (entries are never changed once stored)."""

    def __init__(
        self, strip: tuple[bytes, ...], run: bytes, length: bytes | None, entry: CacheEntry
    ) -> None:
        self.strip = strip
        self.run = run
        #: Content-Length's value (``None`` for a 204 / 1xx, which carry none)
        self.length = length
        self.status = entry.status
        self.body = entry.body
        self.response_time = entry.response_time
        #: the ``Windows`` the fields below were computed for (None: not yet)
        self.windows: object = None
        self.no_cache = False
        self.initial_age = 0.0
        self.lifetime = 0.0

    def note(self, windows: object, no_cache: bool, initial_age: float, lifetime: float) -> None:
        """Keep the entry's freshness data (``policy._Meta``) computed for ``windows``."""
        self.no_cache = no_cache
        self.initial_age = initial_age
        self.lifetime = lifetime
        self.windows = windows


def _plain(k: bytes, v: bytes) -> bool:
    """The line parses back to exactly ``(k, v)`` (``http.models.parse_fields``)."""
    return (
        k == k.lower()
        and 58 not in k  # ":"
        and v == v.strip(b" \t")
        and 13 not in v  # CR
        and 10 not in v  # LF
        and 13 not in k
        and 10 not in k
    )


def wire_of(entry: CacheEntry, strip: tuple[bytes, ...]) -> Wire | None:
    """``entry``'s prebuilt head lines (made once per entry and ``strip``); ``None`` when a
    field would not read back the same (never for what upstreams send through the parser)."""
    w = entry.wire
    if isinstance(w, Wire) and w.strip == strip:
        return w
    lines: list[bytes] = []
    for k, v in entry.headers:
        if k in _REPLACED or k in strip:
            continue
        if not _plain(k, v):
            return None
        lines.append(k + b": " + v + b"\r\n")
    st = entry.status
    length = None if st == 204 or 100 <= st < 200 else str(len(entry.body)).encode()
    w = Wire(strip, b"".join(lines), length, entry)
    entry.wire = w
    return w


#: ``x-cache: LABEL CRLF`` by label (HIT, STALE: a handful)
_LABEL_LINES: Final[dict[bytes, bytes]] = {}


def hit_response(
    entry: CacheEntry | None,
    wire: Wire,
    age: float,
    label: bytes,
    key: str | None,
    lines: bool = False,
) -> Response:
    """What :func:`~.answers.answer` gives for a request without matching conditionals,
    with the head prebuilt: the stored lines, Age, X-Cache, Content-Length (X-Cache-Key).

    ``lines``: for the task-free writer (``fastlines.answer_bytes``), which joins raw lines
    as they are — Age and X-Cache go as lines too (fewer pieces, no field tuples), leaving
    Content-Length (and X-Cache-Key) as items; the bytes are the same, as both writers move
    Content-Length last. Not for an answer whose fields will be parsed (the general path:
    parsing a line costs more than the tuple saves)."""
    extra: list[tuple[bytes, bytes]]
    if lines:
        line = _LABEL_LINES.get(label)
        if line is None:
            line = _LABEL_LINES[label] = b"x-cache: " + label + b"\r\n"
        age_line = b"age: %d\r\n" % int(age)
        runs = [wire.run, age_line, line] if wire.run else [age_line, line]
        extra = []
        if wire.length is not None:
            extra.append((b"content-length", wire.length))
    else:
        # (the fields in the order the lines above parse back to)
        runs = [wire.run] if wire.run else []
        extra = [(b"age", b"%d" % int(age)), (b"x-cache", label)]
        if wire.length is not None:
            extra.append((b"content-length", wire.length))
    if key is not None:
        extra.append((b"x-cache-key", key.encode()))
    # (the wire's status and body are the entry's: ``entry`` is only what it was built from)
    resp = Response(wire.status, None, wire.body)
    resp.set_raw_fields(runs, extra)
    return resp
