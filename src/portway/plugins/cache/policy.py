"""RFC 9111 shared-cache rules as pure functions.

Nothing here does I/O or reads a clock: callers pass ``now`` (wall-clock seconds). The plugin
composes these: :func:`storable` when a response arrives, :func:`assess` + :func:`reuse` on a
lookup, :func:`merge_304` when a validation answers 304, :func:`not_modified` for client
conditionals answered from the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from portway.http.headers import HOP_BY_HOP
from portway.plugins.cache.directives import (
    Directives,
    format_http_date,
    is_valid_etag,
    parse_age,
    parse_cache_control,
    parse_etags,
    parse_http_date,
    parse_list,
    weak_match,
)
from portway.plugins.cache.entry import CacheEntry
from portway.plugins.cache.targeted import select

Pairs = Sequence[tuple[bytes, bytes]]

#: RFC 9110 §15.1: status codes cacheable by default (heuristic freshness allowed)
HEURISTIC_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}
)
#: status codes whose caching semantics this cache implements (for ``must-understand``)
UNDERSTOOD_STATUSES: frozenset[int] = HEURISTIC_STATUSES - {206} | {302, 303, 307}
#: RFC 9110 §9.2.1
SAFE_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: stale responses that stale-if-error may replace
ERROR_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})

#: fields the gateway adds itself; never stored, never merged
OWN_FIELDS: frozenset[bytes] = frozenset({b"x-cache", b"x-cache-key"})
#: fields a 304 must not overwrite (RFC 9111 §3.2: Content-Length, plus framing fields that
#: describe the stored body rather than the validation response)
_NO_UPDATE: frozenset[bytes] = frozenset(
    {b"content-length", b"content-range", b"content-encoding", b"transfer-encoding"}
)
#: RFC 9110 §15.4.5: what a 304 carries
_304_FIELDS: tuple[bytes, ...] = (
    b"cache-control",
    b"content-location",
    b"date",
    b"etag",
    b"expires",
    b"vary",
)


#: request fields the cache reads beyond its key: a request with none of them is "plain"
REQUEST_FIELDS: frozenset[bytes] = frozenset(
    {
        b"cache-control",
        b"pragma",
        b"range",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
    }
)


def values(pairs: Pairs, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in pairs if k == name]


def first(pairs: Pairs, name: bytes) -> str | None:
    for k, v in pairs:
        if k == name:
            return v.decode("latin-1")
    return None


def policy_of(pairs: Pairs, targets: Sequence[bytes] = ()) -> tuple[Directives, bool]:
    """The response's cache directives for this cache and whether they came from a targeted
    field (RFC 9213: then Cache-Control and Expires are ignored)."""
    if targets:
        d = select(targets, pairs)
        if d is not None:
            return d, True
    return parse_cache_control(values(pairs, b"cache-control")), False


def response_directives(pairs: Pairs, targets: Sequence[bytes] = ()) -> Directives:
    return policy_of(pairs, targets)[0]


_NO_DIRECTIVES = Directives()
#: the directives of a request without Cache-Control or Pragma (shared: never mutated)
NO_DIRECTIVES = _NO_DIRECTIVES


def request_directives(pairs: Pairs) -> Directives:
    """Request Cache-Control; ``Pragma: no-cache`` counts only without Cache-Control (§5.4)."""
    if not any(k == b"cache-control" or k == b"pragma" for k, _ in pairs):
        return _NO_DIRECTIVES
    cc = values(pairs, b"cache-control")
    if not cc:
        pragma = [p.lower() for p in parse_list(values(pairs, b"pragma"))]
        if "no-cache" in pragma:
            return parse_cache_control(["no-cache"])
    return parse_cache_control(cc)


def vary_names(pairs: Pairs) -> tuple[str, ...] | None:
    """Sorted lower-cased field names of Vary; ``None`` for ``Vary: *``."""
    names: set[str] = set()
    for member in parse_list(values(pairs, b"vary")):
        m = member.lower()
        if m == "*":
            return None
        names.add(m)
    return tuple(sorted(names))


def normalise_field(pairs: Pairs, name: str) -> str | None:
    """A request field's value for variant selection: lines joined, whitespace collapsed."""
    vals = values(pairs, name.encode("latin-1"))
    if not vals:
        return None
    return ",".join(" ".join(v.split()) for v in vals).replace(", ", ",")


# --- storing (RFC 9111 §3) -------------------------------------------------------------------


def storable(
    method: str,
    status: int,
    resp: Pairs,
    req: Pairs,
    *,
    store_set_cookie: bool = False,
    default_ttl: float = 0.0,
    targets: Sequence[bytes] = (),
) -> tuple[bool, str]:
    """Whether a shared cache may store this response; the reason when it may not.
    ``targets`` is the target list of RFC 9213 (lower-cased field names)."""
    if method != "GET":
        return False, "method"
    if status < 200 or status in (206, 304):
        return False, "status"
    cc, targeted = policy_of(resp, targets)
    rq = request_directives(req)
    if rq.has("no-store"):
        return False, "request no-store"
    if cc.has("must-understand"):
        if status not in UNDERSTOOD_STATUSES:
            return False, "must-understand"
    elif cc.has("no-store"):
        return False, "no-store"
    if cc.bare("private"):
        return False, "private"
    if any(k == b"authorization" for k, _ in req) and not (
        cc.has("public") or cc.has("s-maxage") or cc.has("must-revalidate")
    ):
        return False, "authorization"
    if vary_names(resp) is None:
        return False, "vary *"
    if not store_set_cookie and any(k == b"set-cookie" for k, _ in resp):
        return False, "set-cookie"
    explicit = (
        cc.has("max-age")
        or cc.has("s-maxage")
        or cc.has("public")
        or (not targeted and any(k == b"expires" for k, _ in resp))
    )
    if not explicit and status not in HEURISTIC_STATUSES:
        return False, "not cacheable by default"
    del default_ttl  # storability does not depend on it; kept for call-site symmetry
    return True, ""


def stored_headers(
    resp: Pairs, *, response_time: float, targets: Sequence[bytes] = ()
) -> list[tuple[bytes, bytes]]:
    """The header fields to store: hop-by-hop fields, fields named in Connection or in a
    qualified no-cache/private directive, and our own fields removed; Date added if absent."""
    drop = set(HOP_BY_HOP) | OWN_FIELDS
    for v in values(resp, b"connection"):
        drop.update(t.strip().lower().encode("latin-1") for t in v.split(",") if t.strip())
    cc = response_directives(resp, targets)
    for name in cc.field_names("no-cache") | cc.field_names("private"):
        drop.add(name.encode("latin-1"))
    out = [(k, v) for k, v in resp if k not in drop]
    if not any(k == b"date" for k, _ in out) or parse_http_date(first(out, b"date")) is None:
        out = [(k, v) for k, v in out if k != b"date"]
        out.append((b"date", format_http_date(response_time).encode("latin-1")))
    return out


def merge_304(
    stored: Pairs, fresh: Pairs, *, store_set_cookie: bool = False, targets: Sequence[bytes] = ()
) -> list[tuple[bytes, bytes]]:
    """Stored fields updated from a 304 (RFC 9111 §3.2 / §4.3.4): every field of the 304
    replaces the stored lines of the same name, except Content-Length and framing fields."""
    drop = set(HOP_BY_HOP) | OWN_FIELDS | _NO_UPDATE
    for v in values(fresh, b"connection"):
        drop.update(t.strip().lower().encode("latin-1") for t in v.split(",") if t.strip())
    if not store_set_cookie:
        drop.add(b"set-cookie")
    cc = response_directives(fresh, targets)
    for name in cc.field_names("no-cache") | cc.field_names("private"):
        drop.add(name.encode("latin-1"))
    updates = [(k, v) for k, v in fresh if k not in drop]
    replaced = {k for k, _ in updates}
    return [(k, v) for k, v in stored if k not in replaced] + updates


# --- freshness and age (RFC 9111 §4.2) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Windows:
    """Plugin-level defaults: ``swr``/``sie`` are ``False`` (never), ``True`` (directives
    only) or a default window in seconds."""

    swr: bool | float = True
    sie: bool | float = True
    heuristic: bool = True
    heuristic_max: float = 86400.0
    default_ttl: float = 0.0
    #: RFC 9213 target list, most specific first (lower-cased field names)
    targets: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Assessment:
    """A stored response judged at one instant."""

    age: float
    lifetime: float
    #: bare ``no-cache``: every reuse needs a successful validation
    no_cache: bool
    #: must-revalidate / proxy-revalidate / no-cache: never serve it stale
    stale_forbidden: bool
    #: s-maxage applies (implies proxy-revalidate, §5.2.2.10): no default stale windows
    s_maxage: bool
    swr: float
    sie: float

    @property
    def fresh(self) -> bool:
        return self.lifetime > self.age

    @property
    def staleness(self) -> float:
        return self.age - self.lifetime


def freshness_lifetime(
    status: int, pairs: Pairs, response_time: float, windows: Windows = Windows()
) -> float:
    cc, targeted = policy_of(pairs, windows.targets)
    for name in ("s-maxage", "max-age"):
        n = cc.seconds(name)
        if n is not None:
            # a malformed value makes the response stale rather than guessing (§4.2.1)
            return float(max(n, 0))
    date = parse_http_date(first(pairs, b"date"))
    date_value = date if date is not None else response_time
    expires = [] if targeted else values(pairs, b"expires")
    if expires:
        exp = parse_http_date(expires[0])
        # §5.3: an invalid Expires (e.g. "0") means already expired
        return max(0.0, exp - date_value) if exp is not None else 0.0
    if status in HEURISTIC_STATUSES or cc.has("public"):
        if windows.default_ttl > 0:
            return windows.default_ttl
        if windows.heuristic:
            lm = parse_http_date(first(pairs, b"last-modified"))
            if lm is not None and lm < date_value:
                return min(0.1 * (date_value - lm), windows.heuristic_max)
    return 0.0


def _corrected_initial_age(entry: CacheEntry) -> float:
    date = parse_http_date(entry.header(b"date"))
    date_value = date if date is not None else entry.response_time
    age_value = parse_age(entry.header_values(b"age"))
    apparent_age = max(0.0, entry.response_time - date_value)
    response_delay = max(0.0, entry.response_time - entry.request_time)
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(entry: CacheEntry, now: float) -> float:
    """RFC 9111 §4.2.3 current_age."""
    return _corrected_initial_age(entry) + max(0.0, now - entry.response_time)


def _window(directive: int | None, setting: bool | float, allow_default: bool) -> float:
    if setting is False:
        return 0.0
    if directive is not None and directive >= 0:
        return float(directive)
    if allow_default and not isinstance(setting, bool):
        return float(setting)
    return 0.0


@dataclass(frozen=True, slots=True)
class _Meta:
    """Everything about an entry's freshness that does not depend on the current time;
    computed once per (entry, windows) so a hit costs no header parsing."""

    windows: Windows
    initial_age: float
    lifetime: float
    no_cache: bool
    stale_forbidden: bool
    s_maxage: bool
    swr: float
    sie: float


def _meta(entry: CacheEntry, windows: Windows) -> _Meta:
    m = entry.meta
    if isinstance(m, _Meta) and (m.windows is windows or m.windows == windows):
        return m
    cc = response_directives(entry.headers, windows.targets)
    no_cache = cc.bare("no-cache")
    s_maxage = cc.has("s-maxage")
    m = _Meta(
        windows=windows,
        initial_age=_corrected_initial_age(entry),
        lifetime=freshness_lifetime(entry.status, entry.headers, entry.response_time, windows),
        no_cache=no_cache,
        stale_forbidden=no_cache or cc.has("must-revalidate") or cc.has("proxy-revalidate"),
        s_maxage=s_maxage,
        swr=_window(cc.seconds("stale-while-revalidate"), windows.swr, not s_maxage),
        sie=_window(cc.seconds("stale-if-error"), windows.sie, not s_maxage),
    )
    entry.meta = m
    return m


_DEFAULT_WINDOWS = Windows()


def assess(entry: CacheEntry, now: float, windows: Windows = _DEFAULT_WINDOWS) -> Assessment:
    m = _meta(entry, windows)
    return Assessment(
        age=m.initial_age + max(0.0, now - entry.response_time),
        lifetime=m.lifetime,
        no_cache=m.no_cache,
        stale_forbidden=m.stale_forbidden,
        s_maxage=m.s_maxage,
        swr=m.swr,
        sie=m.sie,
    )


def fresh_age(entry: CacheEntry, now: float, windows: Windows) -> float | None:
    """The entry's current age when it is fresh and reusable without validation for a
    request without Cache-Control (what :func:`assess` + :func:`reuse` call
    :attr:`Reuse.FRESH`), else ``None``: a hit judged without building an Assessment."""
    m = _meta(entry, windows)
    if m.no_cache:
        return None
    age = m.initial_age + max(0.0, now - entry.response_time)
    return age if m.lifetime > age else None


def retention(a: Assessment, has_validators: bool, retain_stale: float) -> float:
    """Seconds from now a store should keep the entry: until it can no longer be served
    fresh or stale, or revalidated."""
    remaining = max(0.0, a.lifetime - a.age)
    stale_for = 0.0 if a.stale_forbidden else max(a.swr, a.sie)
    keep = retain_stale if has_validators else 0.0
    return remaining + max(stale_for, keep)


class Reuse(Enum):
    FRESH = "fresh"
    #: stale but the request's max-stale accepts it
    STALE_OK = "stale_ok"
    #: stale within stale-while-revalidate: serve it and refresh in the background
    STALE_REFRESH = "stale_refresh"
    VALIDATE = "validate"


def reuse(a: Assessment, rq: Directives) -> Reuse:
    """How a stored response may satisfy a request (RFC 9111 §4, §4.2.4, §5.2.1)."""
    if a.no_cache or rq.has("no-cache"):
        return Reuse.VALIDATE
    max_age = rq.seconds("max-age")
    if max_age is not None and max_age >= 0 and a.age > max_age:
        return Reuse.VALIDATE
    min_fresh = rq.seconds("min-fresh")
    if min_fresh is not None and min_fresh >= 0 and a.lifetime - a.age < min_fresh:
        return Reuse.VALIDATE
    if a.fresh:
        return Reuse.FRESH
    if a.stale_forbidden:
        return Reuse.VALIDATE
    if rq.has("max-stale") and not a.s_maxage:
        limit = rq.seconds("max-stale")
        if rq.values["max-stale"] is None or (limit is not None and a.staleness <= limit):
            return Reuse.STALE_OK
    if a.staleness <= a.swr:
        return Reuse.STALE_REFRESH
    return Reuse.VALIDATE


def stale_if_error_ok(a: Assessment, rq: Directives) -> bool:
    """Whether a stale copy may stand in for a failed upstream (RFC 5861 §4)."""
    if a.stale_forbidden:
        return False
    if a.fresh:
        return True
    window = a.sie
    req_window = rq.seconds("stale-if-error")
    if req_window is not None and req_window >= 0:
        window = max(window, float(req_window))
    return a.staleness <= window


# --- validation (RFC 9111 §4.3) --------------------------------------------------------------


def validators(entry: CacheEntry) -> list[tuple[str, str]]:
    """Conditional request fields that validate ``entry`` upstream."""
    out: list[tuple[str, str]] = []
    etag = entry.header(b"etag")
    if etag is not None and is_valid_etag(etag):
        out.append(("if-none-match", etag.strip()))
    lm = entry.header(b"last-modified")
    if lm is not None and parse_http_date(lm) is not None:
        out.append(("if-modified-since", lm.strip()))
    return out


def validator_matches(entry: CacheEntry, resp304: Pairs) -> bool:
    """Whether a 304 selects ``entry`` (RFC 9111 §4.3.4): its strong ETag, if any, must match
    the stored one; a 304 without an ETag selects the entry it validated."""
    tag = first(resp304, b"etag")
    stored = entry.header(b"etag")
    if tag is None or stored is None:
        return True
    return weak_match(tag.strip(), stored.strip())


CONDITIONAL_FIELDS: tuple[bytes, ...] = (
    b"if-none-match",
    b"if-modified-since",
    b"if-match",
    b"if-unmodified-since",
    b"if-range",
)


def has_conditionals(req: Pairs) -> bool:
    return any(k in CONDITIONAL_FIELDS for k, _ in req)


def not_modified(req: Pairs, entry: CacheEntry) -> bool:
    """Whether the client's If-None-Match / If-Modified-Since are satisfied by ``entry``,
    i.e. a 304 is the answer (RFC 9110 §13.1.2, §13.1.3, RFC 9111 §4.3.2)."""
    if entry.status != 200:
        return False
    inm = values(req, b"if-none-match")
    if inm:
        tags = parse_etags(inm)
        if tags is None:
            return True
        etag = entry.header(b"etag")
        return etag is not None and any(weak_match(t, etag.strip()) for t in tags)
    ims = parse_http_date(first(req, b"if-modified-since"))
    if ims is None:
        return False
    ref = parse_http_date(entry.header(b"last-modified"))
    if ref is None:
        ref = parse_http_date(entry.header(b"date"))
    if ref is None:
        ref = entry.response_time
    return ref <= ims


_REPLACED = frozenset({b"age", b"content-length", *OWN_FIELDS})


def response_headers(
    entry: CacheEntry, age: float, *, for_304: bool = False
) -> list[tuple[bytes, bytes]]:
    """Header fields to send with a response built from ``entry``: the stored ones with Age
    replaced (and Content-Length, which the caller frames); only RFC 9110 §15.4.5's for 304."""
    if for_304:
        out = [(k, v) for k, v in entry.headers if k in _304_FIELDS]
    else:
        out = [(k, v) for k, v in entry.headers if k not in _REPLACED]
    out.append((b"age", str(int(age)).encode("latin-1")))
    return out
