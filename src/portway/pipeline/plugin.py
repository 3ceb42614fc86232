"""The plugin contract.

Three tiers, as in Envoy: the registry maps a name to a :class:`Plugin` subclass; one instance
is built per binding (a route's or the global ``plugins:`` list) from its validated ``Config``
model and holds long-lived state only (stores, compiled rules, metric handles); everything
about one request lives in :class:`~portway.pipeline.context.RequestContext`.

A subclass implements only the phases it needs; the runner detects overridden methods once
at build time, so an unimplemented phase costs nothing per request.

=====================  ================================  ===================================
phase                  when                              may
=====================  ================================  ===================================
on_request             after routing                     answer early, edit upstream_request
on_upstream_request    per attempt, after target picked  add headers, sign
on_response            upstream status+headers arrived   edit ctx.response headers
on_response_chunk      per body chunk (opt-in)           transform body bytes
on_error               any failure                       map to a response
on_log                 after the last byte               metrics, logs; never raises
=====================  ================================  ===================================

Request phases run in configured order; response phases in reverse. ``stage`` orders plugin
kinds coarsely (edge < authn < authz < traffic < transform) and config order must respect it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from portway.http.models import Request, Response
from portway.pipeline.context import Consumer, RequestContext

if TYPE_CHECKING:
    from portway.state.base import StateStore


class Stage(IntEnum):
    edge = 0
    authn = 1
    authz = 2
    traffic = 3
    transform = 4


class PluginConfig(BaseModel):
    """Base for plugin config models: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EmptyConfig(PluginConfig):
    pass


C = TypeVar("C", bound=PluginConfig)
T = TypeVar("T")


class ConsumerDirectory:
    """Read-only view of configured consumers that auth plugins look credentials up in.

    Built once per runtime graph by the identity layer; plugins receive it through
    :class:`PluginEnv`. ``by_credential(kind, key)`` returns the consumer owning a credential
    identified by ``key`` (its meaning is up to the credential kind, e.g. a SHA-256 hex digest
    for ``key_auth``).
    """

    def __init__(
        self,
        consumers: dict[str, Consumer] | None = None,
        credentials: dict[tuple[str, str], tuple[Consumer, Any]] | None = None,
    ) -> None:
        self._by_name = consumers or {}
        self._creds = credentials or {}

    def get(self, username: str) -> Consumer | None:
        return self._by_name.get(username)

    def by_credential(self, kind: str, key: str) -> tuple[Consumer, Any] | None:
        return self._creds.get((kind, key))

    def credentials_of_kind(self, kind: str) -> list[tuple[str, Consumer, Any]]:
        return [(k, c, d) for (kd, k), (c, d) in self._creds.items() if kd == kind]

    def all(self) -> list[Consumer]:
        return list(self._by_name.values())


@dataclass
class PluginEnv:
    """What a plugin may use at build time.

    ``shared(key, factory)`` returns an object that survives reloads while the same key is
    asked for (e.g. a limiter's counters or a cache's store, keyed by the config that shapes
    them); objects no longer asked for by the new graph are closed after the swap.
    """

    route: str | None = None
    consumers: ConsumerDirectory = field(default_factory=ConsumerDirectory)
    settings: Any = None
    _shared: dict[str, Any] = field(default_factory=dict)
    _used: set[str] = field(default_factory=set)
    store_factory: Callable[[str], StateStore] | None = None
    #: ``await env.forward(ctx, request)`` sends ``request`` to the route's upstream (balancer
    #: and retries apply, plugins do not) and returns a Response whose body is ``bytes``;
    #: used for cache revalidation and background refresh. Set by the runtime.
    forward: Callable[[RequestContext, Request], Awaitable[Response]] | None = None

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        self._used.add(key)
        if key not in self._shared:
            self._shared[key] = factory()
        obj: T = self._shared[key]
        return obj


class Plugin(Generic[C]):
    """Base class of every plugin; see the module docstring for the phase contract."""

    #: registry name; snake_case, equal to the plugin's folder
    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = Stage.transform
    Config: ClassVar[type[PluginConfig]] = EmptyConfig
    #: set when ``on_response_chunk`` needs the whole body: the buffer cap in bytes
    buffer_response: ClassVar[int | None] = None
    #: set when ``on_response_chunk`` only observes bytes (returns them unchanged): the
    #: response keeps its Content-Length framing instead of being re-chunked
    observes_response_chunks: ClassVar[bool] = False
    #: ``on_request`` and ``on_response`` never suspend (no ``await`` that waits on I/O or a
    #: timer): the gateway may then run them outside a task, on the task-free path
    #: (``proxy/fast.py``), which costs about 40 % less CPU per request. A hook that
    #: suspends anyway fails its request with a 500 there. A class attribute, or set per
    #: instance in ``__init__`` when it depends on the config (``rate_limit``: only the
    #: in-memory store is synchronous). A plugin with ``sync_hooks`` whose chain also needs
    #: a task (its own ``on_response_chunk`` / ``on_error``, e.g. ``cache``) still has its
    #: request hooks run task-free: the request goes to the task after them, unless a hook
    #: answered with a ``bytes`` body, which is written at once (``Chain.answers_inline``;
    #: such a plugin's ``on_response_chunk``, with ``observes_response_chunks``, must not
    #: suspend either on an answer).
    sync_hooks: bool = False
    #: ``on_response`` and ``on_response_chunk`` do nothing on a response this plugin's own
    #: ``on_request`` answered with (or an error it raised there): the runner leaves them
    #: out of that request's response phases, on every path (a cache hit's own hooks)
    skip_own_answer: ClassVar[bool] = False
    #: ``on_request`` never edits ``ctx.upstream_request`` while it is still ``ctx.request``
    #: itself: it makes the copy first (``req.copy_for_upstream()``) when it edits. A chain
    #: of such plugins (and no ``on_upstream_request``) then shares the client's request
    #: until the request is really forwarded (``Chain.copies_upstream_request``): a request a
    #: hook answers (a cache hit) is never copied. The default (False) gets a copy before
    #: the hooks, as every plugin may edit it in place.
    copies_on_edit: ClassVar[bool] = False
    #: phases this instance does not need although its class implements them (a combinator
    #: whose members need none); the runner leaves them out of the chain
    unused_phases: frozenset[str] = frozenset()

    def __init__(self, config: C, env: PluginEnv) -> None:
        self.config = config
        self.env = env

    async def start(self) -> None:
        """Start background work (refresh loops); called once after the graph is built."""

    async def aclose(self) -> None:
        """Stop background work; called after the graph stops serving."""

    async def on_request(self, ctx: RequestContext) -> Response | None:
        return None

    async def on_upstream_request(self, ctx: RequestContext) -> None:
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        return None

    async def on_response_chunk(self, ctx: RequestContext, chunk: bytes, end: bool) -> bytes:
        return chunk

    async def on_error(self, ctx: RequestContext, exc: BaseException) -> Response | None:
        return None

    def on_log(self, ctx: RequestContext) -> None:
        return None


PHASES: tuple[str, ...] = (
    "on_request",
    "on_upstream_request",
    "on_response",
    "on_response_chunk",
    "on_error",
    "on_log",
)


def implements(plugin: Plugin[Any], phase: str) -> bool:
    """Whether ``plugin``'s class overrides ``phase`` (and the instance did not opt out)."""
    return (
        getattr(type(plugin), phase) is not getattr(Plugin, phase)
        and phase not in plugin.unused_phases
    )
