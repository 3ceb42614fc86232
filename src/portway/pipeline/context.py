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

from portway.http.models import Request, Response

if TYPE_CHECKING:
    from portway.routing.router import RouteMatch

T = TypeVar("T")

#: the id of the request the current task is serving (log records pick it up); set through
#: ``RequestContext.request_id``
request_id_var: Final[ContextVar[str | None]] = ContextVar("portway_request_id", default=None)


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


class RequestContext:
    """Everything about one request in flight.

    ``request`` is what the client sent and must not be mutated; ``upstream_request`` starts
    as a copy and is what will be sent upstream. ``response`` is set once a response exists
    (from a plugin, the gateway or the upstream).
    """

    __slots__ = (
        "_request_id",
        "_state",
        "attempt",
        "bytes_in",
        "bytes_out",
        "consumer",
        "debug",
        "error",
        "exchange",
        "extra",
        "match",
        "reached",
        "request",
        "response",
        "served",
        "start",
        "target",
        "trace",
        "upstream_latency",
        "upstream_name",
        "upstream_request",
    )

    def __init__(
        self, request: Request, request_id: str = "", *, copy: bool = True, id_set: bool = False
    ) -> None:
        self.request = request
        #: ``copy=False`` (the task-free path, where no plugin edits it) shares ``request``
        self.upstream_request = request.copy_for_upstream() if copy else request
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
        if request_id or (not id_set and request_id_var.get() is not None):
            # (a ContextVar.set allocates a new context mapping: skip the no-op)
            request_id_var.set(request_id or None)
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
        request_id_var.set(value or None)

    @property
    def route_name(self) -> str | None:
        return self.match.route.name if self.match is not None else None

    @property
    def params(self) -> dict[str, str]:
        return self.match.params if self.match is not None else {}

    def record(self, what: str, name: str, ms: float, detail: str = "") -> None:
        if self.trace is not None:
            self.trace.append(TraceEvent(what, name, ms, detail))
