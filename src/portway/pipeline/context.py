"""Per-request state.

One :class:`RequestContext` exists per request and is the only place per-request state may
live (plugins are shared, immutable instances). Plugins share typed values through
``ctx.state`` with :class:`ContextKey` keys::

    REMAINING = ContextKey[int]("rate_limit.remaining")
    ctx.state[REMAINING] = 3
    n = ctx.state.get(REMAINING)
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from mypy_extensions import mypyc_attr

from portway.http.headers import Headers
from portway.http.models import Request, Response

if TYPE_CHECKING:
    from portway.routing.router import RouteMatch

T = TypeVar("T")

#: the id of the request the current task is serving (log records pick it up); set through
#: ``RequestContext.request_id``
request_id_var: Final[ContextVar[str | None]] = ContextVar("portway_request_id", default=None)
#: its ``get``/``set``, bound once: compiled, ``request_id_var.get()`` is a method call by
#: name (an attribute lookup on the ContextVar type per request), a bound one is not
_rid_get: Final = request_id_var.get
_rid_set: Final = request_id_var.set


class ContextKey(Generic[T]):
    """A typed key for :class:`State`. Compare by identity; ``name`` is for debugging."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ContextKey({self.name!r})"


class State:
    """Typed per-request scratch space keyed by :class:`ContextKey`."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[ContextKey[Any], Any] = {}

    def __getitem__(self, key: ContextKey[T]) -> T:
        return cast(T, self._d[key])

    def __setitem__(self, key: ContextKey[T], value: T) -> None:
        self._d[key] = value

    def __contains__(self, key: ContextKey[Any]) -> bool:
        return key in self._d

    def get(self, key: ContextKey[T], default: T | None = None) -> T | None:
        return cast("T | None", self._d.get(key, default))

    def pop(self, key: ContextKey[T], default: T | None = None) -> T | None:
        return cast("T | None", self._d.pop(key, default))


@dataclass(frozen=True, slots=True)
class Consumer:
    """An authenticated (or anonymous) API client."""

    id: str
    username: str
    groups: frozenset[str] = frozenset()
    #: which credential authenticated it, e.g. ``"key_auth:3f2a…"`` (a hash, never a secret)
    credential: str | None = None
    #: claims or introspection data that authorization plugins may read
    claims: dict[str, Any] = field(default_factory=dict)
    scopes: frozenset[str] = frozenset()
    anonymous: bool = False


@dataclass(slots=True)
class TraceEvent:
    """One step recorded for per-request debugging (``X-Portway-Debug``)."""

    what: str
    name: str
    ms: float
    detail: str = ""


#: values of :attr:`RequestContext.served`, and their metric label values
GENERAL: Final = 0
FAST: Final = 1
FALLBACK: Final = 2
SERVED_LABELS: Final[tuple[str, ...]] = ("general", "fast", "fallback")


@mypyc_attr(allow_interpreted_subclasses=True)
class Releasable:
    """What holds an upstream connection (HTTP/1.1, ``proxy/exchange.py:Exchange``) or stream
    (HTTP/2, ``proxy/h2upstream.py:H2Exchange``) for one request until it is released:
    ``release`` acts once, later calls do nothing. A base class, not a ``Protocol``:
    compiled, the call through it is direct; the HTTP/2 side is interpreted, hence the
    subclassing allowance."""

    def release(self, ok: bool) -> None:
        raise NotImplementedError


class _Union:
    """The last union of two drop sets (the same two, request after request: a chain's
    hooks hand prebuilt sets), to give it again without building it."""

    def __init__(self) -> None:
        self.a: frozenset[bytes] = frozenset()
        self.b: frozenset[bytes] = frozenset()
        self.u: frozenset[bytes] = frozenset()

    def union(self, a: frozenset[bytes], b: frozenset[bytes]) -> frozenset[bytes]:
        if a is self.a and b is self.b:
            return self.u
        u = a | b
        self.a = a
        self.b = b
        self.u = u
        return u


_UNIONS: Final = _Union()


class RequestContext:
    """Everything about one request in flight.

    ``request`` is what the client sent and must not be mutated; ``upstream_request`` starts
    as a copy and is what will be sent upstream. ``response`` is set once a response exists
    (from a plugin, the gateway or the upstream).

    Copy-on-edit hooks (the task-free path shares ``request`` as ``upstream_request`` until a
    hook edits it) may record a field edit with :meth:`edit_upstream_fields` instead of
    copying the request: while it is pending, the first read of ``upstream_request`` applies
    it to a copy (so every reader sees the edited request), and the task-free path's head
    writer applies it while writing the head (``proxy/fastlines.py:request_head``), with no
    copy at all.
    """

    __slots__ = (
        "_request_id",
        "_state",
        "_upstream",
        "attempt",
        "bytes_in",
        "bytes_out",
        "consumer",
        "debug",
        "error",
        "exchange",
        "extra",
        "limits",
        "match",
        "reached",
        "request",
        "response",
        "served",
        "start",
        "target",
        "trace",
        "up_add",
        "up_drop",
        "up_lines",
        "upstream_latency",
        "upstream_name",
    )

    def __init__(
        self, request: Request, request_id: str = "", *, copy: bool = True, id_set: bool = False
    ) -> None:
        self.request = request
        #: ``copy=False`` (the task-free path, where no plugin edits it) shares ``request``
        self._upstream = request.copy_for_upstream() if copy else request
        #: the pending field edit (:meth:`edit_upstream_fields`): the fields named in
        #: ``up_drop`` go, ``up_add`` is appended (``up_add`` None: nothing pending);
        #: ``up_lines``: ``up_add`` serialised, when no forwarding rule looks at its names
        self.up_drop: frozenset[bytes] | None = None
        self.up_add: list[tuple[bytes, bytes]] | None = None
        self.up_lines: bytes | None = None
        #: the rate-limit reports of the request (``plugins/_ratelimit/headers.py``: a list of
        #: ``(Reporter, Decision)``, None until the first), a slot rather than ``state``
        self.limits: list[Any] | None = None
        self.response: Response | None = None
        self.match: RouteMatch | None = None
        self.consumer: Consumer | None = None
        #: the target picked for the current attempt (``upstream.Target``)
        self.target: Any = None
        self.upstream_name: str | None = None
        self.attempt = 0
        self.error: BaseException | None = None
        self._state: State | None = None
        self._request_id = request_id
        # ``id_set``: the caller's first step sets the id (``Chain.sets_id_first``), so the
        # previous request's is not cleared first
        if request_id or (not id_set and _rid_get() is not None):
            # (a ContextVar.set allocates a new context mapping: skip the no-op)
            _rid_set(request_id or None)
        self.start = perf_counter()
        self.upstream_latency: float | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.debug = False
        self.trace: list[TraceEvent] | None = None
        self.extra: dict[str, Any] = {}
        #: which path served it: :data:`GENERAL`, :data:`FAST` (task-free) or :data:`FALLBACK`
        #: (started task-free, finished by the task); exported per route as metrics
        self.served = GENERAL
        #: the upstream exchange in progress (released exactly once, ``proxy/exchange.py``)
        self.exchange: Releasable | None = None
        #: binding position of the plugin whose ``on_request`` is running or answered/failed
        #: (None once every ``on_request`` passed); response phases skip plugins after it
        self.reached: int | None = None

    @property
    def upstream_request(self) -> Request:
        """What will be sent upstream (a pending field edit applied first, to a copy)."""
        if self.up_add is not None:
            self._apply_edit()
        return self._upstream

    @upstream_request.setter
    def upstream_request(self, value: Request) -> None:
        # the new request replaces the old one whole, pending edit included
        self._upstream = value
        self.up_add = self.up_drop = self.up_lines = None

    @property
    def upstream_unedited(self) -> Request:
        """``upstream_request`` without the pending field edit (the head writer applies
        it itself: ``up_drop`` / ``up_add`` / ``up_lines``)."""
        return self._upstream

    def edit_upstream_fields(
        self,
        drop: frozenset[bytes] | None,
        add: list[tuple[bytes, bytes]],
        lines: bytes | None = None,
    ) -> None:
        """Remove the upstream request's fields named in ``drop`` (lower-case), then append
        ``add``: what ``headers.remove_many(drop)`` then ``headers.raw().extend(add)`` do,
        without copying the client's request while it is still shared (the edit is kept
        pending; see the class docstring). ``add`` is never mutated (a list shared between
        requests is fine); ``lines``: ``add`` serialised (``name: value CRLF`` each), given
        only when no forwarding rule looks at those names (``forwarding.plain_lines``)."""
        up = self._upstream
        if up is not self.request:
            # a copy already: edited in place
            h = up.headers
            if drop is not None:
                for k, _ in h.raw():
                    if k in drop:
                        h.remove_many(drop)
                        break
            h.raw().extend(add)
            return
        prev = self.up_add
        if prev is None:
            self.up_drop = drop
            self.up_add = add
            self.up_lines = lines
            return
        # a second edit: (F - d1 + a1) - d2 + a2 = F - (d1 | d2) + (a1 - d2) + a2
        prev_lines = self.up_lines
        if drop is not None:
            for kv in prev:
                if kv[0] in drop:
                    prev = [kv for kv in prev if kv[0] not in drop]
                    prev_lines = None
                    break
            d1 = self.up_drop
            self.up_drop = drop if d1 is None else _UNIONS.union(d1, drop)
        self.up_add = prev + add
        self.up_lines = prev_lines + lines if prev_lines is not None and lines is not None else None

    def upstream_items(self) -> list[tuple[bytes, bytes]]:
        """The upstream request's fields with the pending edit applied (a new list when one
        is pending, else the request's own list)."""
        raw = self._upstream.headers.raw()
        add = self.up_add
        if add is None:
            return raw
        drop = self.up_drop
        items = list(raw) if drop is None else [kv for kv in raw if kv[0] not in drop]
        items.extend(add)
        return items

    def _apply_edit(self) -> None:
        items = self.upstream_items()
        self._upstream = self._upstream.copy_for_upstream(Headers.adopt(items))
        self.up_add = self.up_drop = self.up_lines = None

    @property
    def state(self) -> State:
        """Typed scratch space for plugins (created on first use: most requests need none)."""
        st = self._state
        if st is None:
            st = self._state = State()
        return st

    @property
    def request_id(self) -> str:
        """The request's id; setting it also tags every log line of this request."""
        return self._request_id

    @request_id.setter
    def request_id(self, value: str) -> None:
        self._request_id = value
        _rid_set(value or None)

    @property
    def route_name(self) -> str | None:
        return self.match.route.name if self.match is not None else None

    @property
    def params(self) -> dict[str, str]:
        return self.match.params if self.match is not None else {}

    def record(self, what: str, name: str, ms: float, detail: str = "") -> None:
        if self.trace is not None:
            self.trace.append(TraceEvent(what, name, ms, detail))
