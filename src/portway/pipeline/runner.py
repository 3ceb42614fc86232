"""Phase runner: per-route plugin lists, computed once when a runtime graph is built."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Final, TypeVar, cast

from portway.errors import GatewayError, PluginError
from portway.http.headers import Headers
from portway.http.models import Response
from portway.http.rawhead import first_bytes
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.pending import Pending
from portway.pipeline.plugin import Plugin, implements
from portway.pipeline.suspend import HookSuspended, finish

log: Final = logging.getLogger("portway.plugins")

Bound = Plugin[Any]
T = TypeVar("T")

_PRE_ATTEMPT: Final[ContextKey[list[tuple[bytes, bytes]]]] = ContextKey(
    "runner.pre_attempt_headers"
)


class SyncHooks:
    """The request and response work of a built-in plugin as plain methods.

    A plugin whose ``on_request``/``on_response`` never suspend may offer one as its
    ``fast_hooks`` attribute (an instance, built with the plugin): the chain then calls
    ``request``/``response`` directly instead of creating a coroutine per hook and driving it
    to ``StopIteration``. Both must do exactly what the plugin's ``on_request``/``on_response``
    do (those usually delegate here). A base class compiled with the runner, so the call is a
    direct one: only modules compiled with it (setup.py ``HOT_MODULES``) subclass it, never a
    third-party plugin (an interpreted class cannot subclass a compiled one; such plugins keep
    the coroutine hooks, which stay supported).

    ``request`` may return a :class:`~portway.pipeline.pending.Pending` when its outcome
    needs I/O (a Redis decision): the chain stops there and the caller waits for it.
    """

    def request(self, ctx: RequestContext) -> Response | Pending | None:
        return None

    def response(self, ctx: RequestContext) -> None:
        return None

    def sets_request_id(self) -> bool:
        """``request`` sets ``ctx.request_id`` first thing, whatever the request (it raises
        nothing before that)."""
        return False


class LogHook:
    """A built-in plugin's ``on_log`` work as a plain method (``log``), offered as the
    plugin's ``fast_log`` attribute: the chain calls it directly instead of the plugin's
    interpreted ``on_log`` (which must do the same, usually by delegating here). Compiled with
    the runner, subclassed only by compiled modules (as :class:`SyncHooks`). Like ``on_log``,
    ``log`` must not raise in normal operation (the chain logs and swallows what it raises)."""

    def log(self, ctx: RequestContext) -> None:
        return None


def log_hook_of(plugin: Bound) -> LogHook | None:
    """The plugin's :class:`LogHook`, when it offers one."""
    h = getattr(plugin, "fast_log", None)
    return h if isinstance(h, LogHook) else None


class Replaces:
    """The response fields a :class:`FieldHooks` sets: lower-case ``names`` whose fields
    (the upstream's, or an earlier hook's) give way to the hook's own. Built once per
    binding; ``pattern`` (``\\n(?:name|...):``) lets the lite response head look for such
    names in its lower-cased raw lines (``proxy/fast.py``) with one search, without parsing
    them."""

    def __init__(self, names: Iterable[bytes]) -> None:
        self.names: frozenset[bytes] = frozenset(n.lower() for n in names)
        # longest first: an alternation takes the first name that matches
        alt = b"|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        self.pattern: re.Pattern[bytes] = re.compile(b"\n(?:" + alt + b"):")
        #: the first bytes of ``names`` (``http/rawhead.py:first_bytes``): the lite head's
        #: scanner tells whether a line of these names is there (``RawHead.watch``)
        self.first: bytes = first_bytes(self.names)


class FieldHooks(SyncHooks):
    """:class:`SyncHooks` whose response work is only "set these fields": every field named
    by the returned :class:`Replaces` is removed (whoever added it), then the hook's fields
    are appended, in its order (:func:`replace_fields`, the one rule).

    ``response_fields`` appends the ``(lower-case name, value)`` fields to set to ``out`` and
    returns the names they replace, or None when it sets nothing this time (``out``
    untouched). It must not read or edit the response's fields, and never names a framing or
    hop-by-hop field. A chain whose response hooks are all of this kind keeps the lite
    response head on the task-free path (``Chain.fields_only``): the upstream's lines are
    relayed as they are, minus lines of the replaced names, plus these fields; every other
    path applies the same result to ``Response.headers`` through :meth:`response`."""

    def response_fields(
        self, ctx: RequestContext, out: list[tuple[bytes, bytes]]
    ) -> Replaces | None:
        return None

    def response_run(self, ctx: RequestContext) -> FieldRun | None:
        """What ``response_fields`` would set this time, when the hook keeps it as a
        :class:`FieldRun` (the fields repeat: a rate limit far from its limit), else None
        (the default: ``response_fields`` is called). When not None, ``response_fields``
        would have appended exactly ``run.items`` and returned ``run.replaces``, and calling
        it would have done nothing else."""
        return None

    def fresh_fields(self) -> bool:
        """``response_fields`` appends new tuples every time (a request id): they are never
        the very tuples of the time before, so the chain does not keep them to compare
        (``Chain.run_response_fields``' ``runs``). False (the default): it may repeat them."""
        return False

    def replaces_names(self) -> frozenset[bytes] | None:
        """Every name a :class:`Replaces` that ``response_fields`` returns may hold, or None
        (not known: the default). When every hook of a chain knows, the lite head looks
        for all their names at once, and a search that finds none needs no other."""
        return None

    def response(self, ctx: RequestContext) -> None:
        resp = ctx.response
        if resp is None:
            return
        out: list[tuple[bytes, bytes]] = []
        rep = self.response_fields(ctx, out)
        if rep is not None:
            replace_fields(resp.headers, rep.names, out)


class _Rendered:
    """The fields one :class:`FieldHooks` set last time (the tuples themselves) and, once
    they repeated, the same as ``name: value CRLF`` lines (None: not yet, or not as lines:
    see :func:`_as_lines`)."""

    __slots__ = ("items", "lines", "tried")

    def __init__(self, items: list[tuple[bytes, bytes]]) -> None:
        self.items = items
        self.lines: bytes | None = None
        #: ``lines`` was rendered (or found not to be renderable)
        self.tried = False


def _replaced(
    first: list[tuple[bytes, bytes]],
    more: list[list[tuple[bytes, bytes]]] | None,
    names: frozenset[bytes],
) -> bool:
    """Some field of ``first`` or of the lists in ``more`` is named in ``names``."""
    for kv in first:
        if kv[0] in names:
            return True
    if more is not None:
        for m in more:
            for kv in m:
                if kv[0] in names:
                    return True
    return False


class FieldRun:
    """Fields a :class:`FieldHooks` sets again and again, kept by the hook while they repeat
    (``FieldHooks.response_run``): the list (never mutated), the names they replace, and the
    same as ``name: value CRLF`` lines (None: not as lines, :func:`_as_lines`). The HTTP/1.1
    head writer takes the lines as one run (``Chain.run_response_fields``' ``runs``): no
    tuple is appended, compared or removed per response."""

    __slots__ = ("items", "lines", "replaces")

    def __init__(self, items: list[tuple[bytes, bytes]], replaces: Replaces) -> None:
        self.items = items
        self.replaces = replaces
        self.lines: bytes | None = _as_lines(items)


#: framing fields (``http/relay.py:FRAMING``): never in a prerendered run (the writer drops
#: them from a hook's fields)
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def _as_lines(items: list[tuple[bytes, bytes]]) -> bytes | None:
    """``items`` as lines, when lines say exactly the same: lower-case names with no colon,
    not framing; values without CR/LF and without the blanks a parse would strip (the lines
    go among the relayed ones: ``Response.headers`` parses them back to these pairs)."""
    parts: list[bytes] = []
    for k, v in items:
        if (
            not k
            or k in _FRAMING
            or k != k.lower()
            or 58 in k  # b":"
            or 13 in v  # b"\r"
            or 10 in v  # b"\n"
            or (v and (v[0] in b" \t" or v[-1] in b" \t"))
        ):
            return None
        parts.append(k)
        parts.append(b": ")
        parts.append(v)
        parts.append(b"\r\n")
    return b"".join(parts)


def replace_fields(h: Headers, names: frozenset[bytes], fields: list[tuple[bytes, bytes]]) -> None:
    """Remove every field of ``h`` named in ``names``, then append ``fields``: what a
    :class:`FieldHooks` does to a response (a later hook replacing an earlier one's fields:
    the last wins)."""
    # one scan, and one rebuild only when some field is there already (rare)
    for k, _ in h.raw():
        if k in names:
            h.remove_many(names)
            break
    items = h.raw()
    items += fields


def hooks_of(plugin: Bound) -> SyncHooks | None:
    """The plugin's :class:`SyncHooks`, when it offers them."""
    h = getattr(plugin, "fast_hooks", None)
    return h if isinstance(h, SyncHooks) else None


def _wrap(plugin: Bound, phase: str, exc: Exception) -> GatewayError:
    if isinstance(exc, GatewayError):
        if exc.source is None:
            exc.source = plugin.name
        return exc
    log.error(
        "plugin %s failed in %s: %s",
        plugin.name,
        phase,
        exc,
        exc_info=exc,
    )
    return PluginError(f"plugin {plugin.name} failed", source=plugin.name)


class Chain:
    """The plugins bound to one route (globals merged in), split per phase.

    Request-side lists are in binding order; response-side lists are reversed.
    """

    __slots__ = (
        "_cuts",
        "_field_hooks",
        "_fresh",
        "_log_hooks",
        "_one_rep",
        "_pos",
        "_quiet_answer",
        "_rendered",
        "_req_hooks",
        "_req_pos",
        "_resp_hooks",
        "answers_inline",
        "buffer_cap",
        "callbacks_only",
        "copies_upstream_request",
        "field_names",
        "fields_only",
        "on_error",
        "on_log",
        "on_request",
        "on_response",
        "on_response_chunk",
        "on_upstream_request",
        "plugins",
        "sets_id_first",
        "sync_request",
        "transforms_body",
        "watch",
    )

    def __init__(self, plugins: Sequence[Bound]) -> None:
        self.plugins = tuple(plugins)
        #: binding position of each plugin, to tell which ones a short-circuit never reached
        self._pos = {id(p): i for i, p in enumerate(self.plugins)}
        self._cuts: dict[tuple[int, int], tuple[Bound, ...]] = {}

        def pick(phase: str) -> tuple[Bound, ...]:
            return tuple(p for p in self.plugins if implements(p, phase))

        self.on_request = pick("on_request")
        self.on_upstream_request = pick("on_upstream_request")
        self.on_response = tuple(reversed(pick("on_response")))
        self.on_response_chunk = tuple(reversed(pick("on_response_chunk")))
        self.on_error = tuple(reversed(pick("on_error")))
        self.on_log = tuple(reversed(pick("on_log")))
        #: the plugins' :class:`SyncHooks` (or None), aligned with on_request / on_response
        self._req_hooks = tuple(hooks_of(p) for p in self.on_request)
        #: binding position of each ``on_request`` plugin (``ctx.reached``)
        self._req_pos = tuple(self._pos[id(p)] for p in self.on_request)
        self._resp_hooks = tuple(hooks_of(p) for p in self.on_response)
        #: the plugins' :class:`LogHook` (or None), aligned with on_log
        self._log_hooks = tuple(log_hook_of(p) for p in self.on_log)
        #: the first request hook sets the request id (``request_id``): the task-free path
        #: does not clear the previous request's before (one ``ContextVar.set`` fewer)
        first = self._req_hooks[0] if self._req_hooks else None
        self.sets_id_first = first is not None and first.sets_request_id()
        fh = tuple(h for h in self._resp_hooks if isinstance(h, FieldHooks))
        #: every response hook only sets fields (:class:`FieldHooks`): the task-free path
        #: keeps the lite response head (``run_response_fields``)
        self.fields_only = bool(self.on_response) and len(fh) == len(self.on_response)
        self._field_hooks: tuple[FieldHooks, ...] = fh if self.fields_only else ()
        #: per field hook, what it set last time (``run_response_fields``' ``runs``)
        self._rendered: list[_Rendered | None] = [None] * len(self._field_hooks)
        #: per field hook, it never sets the same tuples twice (``FieldHooks.fresh_fields``)
        self._fresh = tuple(h.fresh_fields() for h in self._field_hooks)
        #: ``run_response_fields``' answer when one hook set fields: the same list while it
        #: is the same :class:`Replaces` (no list per response; callers never mutate it)
        self._one_rep: list[Replaces] | None = None
        #: every name the field hooks may replace, as one :class:`Replaces`: the lite head
        #: looks for all of them with one search (``fastlines.without_replaced``)
        self.field_names: Replaces | None = None
        known = [h.replaces_names() for h in fh]
        if self.fields_only and len(fh) > 1 and None not in known:
            # (one hook: its own search is the same one)
            every: set[bytes] = set()
            for names in known:
                if names is not None:
                    every |= names
            self.field_names = Replaces(every)
        #: the same names for the upstream head scanner (one hook too): when none of them is
        #: in the head (``RawHead.seen``), no search of its lines at all; None: not known
        self.watch: Replaces | None = None
        if self.fields_only and None not in known:
            watch = (
                self.field_names
                if self.field_names is not None
                else Replaces(known[0] or frozenset())
            )
            # (the gateway's own Via line is added after the scan)
            self.watch = watch if b"via" not in watch.names else None
        #: some chunk hook may change the body length, so Content-Length cannot be kept
        self.transforms_body = any(not p.observes_response_chunks for p in self.on_response_chunk)
        caps = [p.buffer_response for p in self.on_response_chunk if p.buffer_response]
        self.buffer_cap: int | None = max(caps) if caps else None
        #: nothing here needs a task: a request may take the task-free path (proxy/fast.py),
        #: running the request/response hooks of ``sync_hooks`` plugins with ``*_sync``
        #: the request and response hooks never suspend: the task-free path may run the
        #: request hooks (and hand the request to the task after them when it cannot finish)
        self.sync_request = all(p.sync_hooks for p in (*self.on_request, *self.on_response))
        self.callbacks_only = self.sync_request and not (
            self.on_upstream_request or self.on_response_chunk or self.on_error
        )
        #: ``RequestContext.upstream_request`` must be a copy before the request hooks run:
        #: some hook may edit it in place (not ``Plugin.copies_on_edit``) or an
        #: ``on_upstream_request`` hook edits it per attempt. False: the request is shared
        #: and copied only when it is forwarded on the general path (``handler.py``) or a
        #: hook edits it — a request a hook answers (a cache hit) is never copied
        self.copies_upstream_request = bool(self.on_upstream_request) or any(
            not p.copies_on_edit for p in self.on_request
        )
        #: by binding position: an answer given there passes no response or chunk hook (the
        #: rule of :meth:`_ran`), so the task-free path writes it without running either
        #: phase (a cache hit on a route where nothing before the cache edits responses)
        self._quiet_answer = tuple(
            not any(
                self._pos[id(p)] < cut or (self._pos[id(p)] == cut and not p.skip_own_answer)
                for p in (*self.on_response, *self.on_response_chunk)
            )
            for cut in range(len(self.plugins))
        )
        #: an answer a request hook gives with a ``bytes`` body may be written task-free: the
        #: response and chunk hooks it passes through all run without a task (a chunk hook
        #: only there when its plugin observes chunks and promises ``sync_hooks``)
        self.answers_inline = self.sync_request and all(
            p.sync_hooks and p.observes_response_chunks for p in self.on_response_chunk
        )

    async def run_request(self, ctx: RequestContext, start: int = 0) -> Response | None:
        """Run ``on_request`` in order (from the ``start``-th hook); return the first
        short-circuit response."""
        trace = ctx.trace
        tracer = ctx.extra.get("_tracer")
        hooks = self.on_request if start == 0 else self.on_request[start:]
        for p in hooks:
            ctx.reached = self._pos[id(p)]
            t0 = time.perf_counter() if trace is not None else 0.0
            tok = tracer.start_phase(ctx, p.name, "on_request") if tracer is not None else None
            try:
                resp = await p.on_request(ctx)
            except Exception as e:
                err = _wrap(p, "on_request", e)
                if tracer is not None:
                    tracer.end_phase(tok, err)
                ctx.extra["rejected_by"] = p.name
                if trace is not None:
                    ctx.record("on_request", p.name, _ms(t0), f"error {err.status}")
                raise err from e
            if tracer is not None:
                tracer.end_phase(tok)
            if trace is not None:
                ctx.record("on_request", p.name, _ms(t0), "respond" if resp else "continue")
            if resp is not None:
                ctx.extra["rejected_by"] = p.name
                return resp
        ctx.reached = None
        return None

    def run_request_sync(self, ctx: RequestContext, start: int = 0) -> Response | Pending | None:
        """:meth:`run_request` for a chain of ``sync_hooks`` plugins, outside any task
        (no tracing or debug trace there: those requests take the task path), from the
        ``start``-th hook. A hook that suspends raises :class:`HookSuspended` (its ``index``
        set): the caller hands it to a task, which carries on with :meth:`resume_request`,
        or waits for what it yielded and carries on with :meth:`continue_request_sync`. A
        hook whose outcome comes later returns a :class:`Pending` (its ``index`` set): it is
        returned as is, and the caller carries on with :meth:`continue_pending`."""
        hooks = self._req_hooks
        plugins = self.on_request
        at = self._req_pos
        for i in range(start, len(plugins)):
            ctx.reached = at[i]
            h = hooks[i]
            try:
                resp = h.request(ctx) if h is not None else drive(plugins[i].on_request(ctx))
            except HookSuspended as s:
                s.index = i
                raise
            except Exception as e:
                p = plugins[i]
                ctx.extra["rejected_by"] = p.name
                raise _wrap(p, "on_request", e) from e
            if resp is not None:
                if isinstance(resp, Pending):
                    resp.index = i
                    return resp
                ctx.extra["rejected_by"] = plugins[i].name
                return resp
        ctx.reached = None
        return None

    def continue_pending(self, ctx: RequestContext, pending: Pending) -> Response | Pending | None:
        """Carry on :meth:`run_request_sync` once a hook's :class:`Pending` finished (from
        its ``on_done`` callback): its error raised or its response returned as the hook's
        own would be, else the hooks after it run."""
        i = pending.index
        p = self.on_request[i]
        ctx.reached = self._pos[id(p)]
        err = pending.error
        if err is not None:
            ctx.extra["rejected_by"] = p.name
            raise _wrap(p, "on_request", err) from err
        resp = pending.response
        if resp is not None:
            ctx.extra["rejected_by"] = p.name
            return resp
        return self.run_request_sync(ctx, i + 1)

    def continue_request_sync(
        self, ctx: RequestContext, s: HookSuspended
    ) -> Response | Pending | None:
        """Carry on :meth:`run_request_sync` where a hook suspended, outside any task, once
        what it yielded (a future: a Redis reply) is done — from that future's done-callback
        (``proxy/fast.py`` parks the request meanwhile): the hook is sent on (not run again),
        then the hooks after it run. Raises :class:`HookSuspended` (a new one, ``index`` set)
        when a hook suspends again, and the hooks' errors as :meth:`run_request_sync` does."""
        i = s.index
        p = self.on_request[i]
        ctx.reached = self._pos[id(p)]
        coro = s.coro
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            resp = cast("Response | None", stop.value)
        except Exception as e:
            ctx.extra["rejected_by"] = p.name
            raise _wrap(p, "on_request", e) from e
        else:
            again = HookSuspended(coro, yielded)
            again.index = i
            raise again
        if resp is not None:
            ctx.extra["rejected_by"] = p.name
            return resp
        return self.run_request_sync(ctx, i + 1)

    async def resume_request(self, ctx: RequestContext, s: HookSuspended) -> Response | None:
        """Carry on :meth:`run_request_sync` where a hook suspended: finish that hook (it is
        not run again), then run the hooks after it."""
        p = self.on_request[s.index]
        ctx.reached = self._pos[id(p)]
        try:
            resp = await finish(s)
        except Exception as e:
            ctx.extra["rejected_by"] = p.name
            raise _wrap(p, "on_request", e) from e
        if resp is not None:
            ctx.extra["rejected_by"] = p.name
            return cast(Response, resp)
        return await self.run_request(ctx, s.index + 1)

    def answer_is_quiet(self, ctx: RequestContext) -> bool:
        """The answer a request hook gave (``ctx.reached`` is its position) passes no
        response or chunk hook: :meth:`run_response_sync` and :meth:`run_chunk_sync` would
        do nothing for it."""
        cut = ctx.reached
        return cut is not None and self._quiet_answer[cut]

    def run_response_sync(self, ctx: RequestContext) -> None:
        """:meth:`run_response` for a chain of ``sync_hooks`` plugins, outside any task. A
        hook that suspends here fails the request (the response is already being relayed:
        there is no earlier point to hand over from)."""
        plugins = self.on_response
        hooks = self._resp_hooks
        cut = ctx.reached
        pos = self._pos
        for i, p in enumerate(plugins):
            if cut is not None and (pos[id(p)] > cut or (pos[id(p)] == cut and p.skip_own_answer)):
                continue  # the rule of _ran (a short-circuit never reached it)
            h = hooks[i]
            try:
                if h is not None:
                    h.response(ctx)
                else:
                    drive(p.on_response(ctx))
            except HookSuspended as s:
                s.close()
                raise _wrap(p, "on_response", RuntimeError(str(s))) from None
            except Exception as e:
                raise _wrap(p, "on_response", e) from e

    def run_chunk_sync(self, ctx: RequestContext, body: bytes) -> bytes:
        """:meth:`run_chunk` of a whole ``bytes`` body (``end`` set) outside any task, for a
        chain with ``answers_inline``. A hook that suspends fails the request."""
        plugins = self.on_response_chunk
        if ctx.reached is not None:
            plugins = self._ran(ctx, plugins)
        for p in plugins:
            try:
                body = drive(p.on_response_chunk(ctx, body, True))
            except HookSuspended as s:
                s.close()
                raise _wrap(p, "on_response_chunk", RuntimeError(str(s))) from None
            except Exception as e:
                raise _wrap(p, "on_response_chunk", e) from e
        return body

    def run_response_fields(
        self,
        ctx: RequestContext,
        items: list[tuple[bytes, bytes]],
        runs: list[bytes] | None = None,
    ) -> list[Replaces] | None:
        """:meth:`run_response_sync` for a ``fields_only`` chain, on no parsed fields: append
        the fields the hooks set to ``items`` (empty on entry), in hook order, a later hook's
        replacing an earlier one's; return the :class:`Replaces` of the hooks that set any
        (the response's own fields of those names are to go), or None for none; the list may
        be shared with other responses' answers: never mutated.

        ``runs`` (HTTP/1.1's head writer): the fields of the leading hooks that set the very
        same fields (the same tuples) as last time — a rate limit far from its limit — go
        there instead, as one ``name: value CRLF`` run each, rendered once (they come before
        ``items``, in hook order; never framing fields: :func:`_as_lines`). A leading hook
        that keeps its fields as a :class:`FieldRun` (``FieldHooks.response_run``) gives its
        lines there directly, from its first such response on."""
        hooks = self._field_hooks
        cut = ctx.reached
        pos = self._pos
        # the first hook's Replaces, then the list (``reps``) from the second on
        rep1: Replaces | None = None
        reps: list[Replaces] | None = None
        lead = runs is not None
        # the fields moved to ``runs``: the first hook's, then the others' (no list per
        # response for one)
        moved1: list[tuple[bytes, bytes]] | None = None
        moved: list[list[tuple[bytes, bytes]]] | None = None
        for i, p in enumerate(self.on_response):
            if cut is not None and (pos[id(p)] > cut or (pos[id(p)] == cut and p.skip_own_answer)):
                continue  # the rule of _ran (a short-circuit never reached it)
            n = len(items)
            h = hooks[i]
            run: FieldRun | None = None
            try:
                if lead and runs is not None:
                    # the hook's fields as it keeps them: lines, nothing appended to compare
                    run = h.response_run(ctx)
                    if run is not None and run.lines is None:
                        run = None
                if run is not None:
                    rep: Replaces | None = run.replaces
                else:
                    rep = h.response_fields(ctx, items)
            except Exception as e:
                raise _wrap(p, "on_response", e) from e
            if rep is None:
                continue
            names = rep.names
            if moved1 is not None and runs is not None and _replaced(moved1, moved, names):
                # an earlier hook's fields are replaced: back among the items (rare; hooks
                # mostly set names of their own)
                back = list(moved1)
                if moved is not None:
                    for m2 in moved:
                        back += m2
                items[:0] = back
                n += len(back)
                runs.clear()
                moved1 = moved = None
                lead = False
            if run is not None and not lead:
                # an earlier run went back among the items: this one goes there too
                items.extend(run.items)
                run = None
            if n:
                for j in range(n):
                    if items[j][0] in names:
                        kept = [kv for kv in items[:n] if kv[0] not in names]
                        items[:n] = kept
                        n = len(kept)
                        break
            if rep1 is None:
                rep1 = rep
            elif reps is None:
                reps = [rep1, rep]
            else:
                reps.append(rep)
            m: list[tuple[bytes, bytes]] | None = None
            if run is not None and runs is not None:
                runs.append(cast(bytes, run.lines))
                m = run.items
            elif lead and self._fresh[i]:
                lead = False  # (nothing to compare: no run from here on)
            elif lead and runs is not None:
                lead = self._reuse(i, items, n, runs)
                if lead:
                    m = cast("_Rendered", self._rendered[i]).items
            if m is not None:
                if moved1 is None:
                    moved1 = m
                elif moved is None:
                    moved = [m]
                else:
                    moved.append(m)
        if reps is not None or rep1 is None:
            return reps
        one = self._one_rep
        if one is None or one[0] is not rep1:
            one = self._one_rep = [rep1]
        return one

    def _reuse(self, i: int, items: list[tuple[bytes, bytes]], n: int, runs: list[bytes]) -> bool:
        """The ``i``-th field hook set ``items[n:]``: when they are the tuples it set last
        time, move them to ``runs`` as lines (rendered at their first repeat) and say True;
        else remember them and say False."""
        memo = self._rendered[i]
        count = len(items) - n
        if memo is not None:
            # as objects: compiled, a ``tuple[bytes, bytes]`` read from a list is unboxed,
            # and ``is`` would compare fresh boxes
            last = cast("list[object]", memo.items)
            now = cast("list[object]", items)
            if len(last) == count:
                j = 0
                while j < count and now[n + j] is last[j]:
                    j += 1
                if j == count:
                    if not memo.tried:
                        memo.tried = True
                        memo.lines = _as_lines(memo.items)
                    lines = memo.lines
                    if lines is None:
                        return False
                    runs.append(lines)
                    del items[n:]
                    return True
        self._rendered[i] = _Rendered(items[n:])
        return False

    def _ran(self, ctx: RequestContext, plugins: tuple[Bound, ...]) -> tuple[Bound, ...]:
        """``plugins`` minus those a short-circuit (answer or error) in ``on_request`` never
        reached: as in Envoy, a local reply only passes through filters that saw the request.
        The plugin that short-circuited is left out too when its ``skip_own_answer`` says its
        hooks do nothing then. Memoised per (phase list, cut)."""
        cut = ctx.reached
        if cut is None:
            return plugins
        k = (id(plugins), cut)
        got = self._cuts.get(k)
        if got is None:
            pos = self._pos
            got = tuple(
                p
                for p in plugins
                if pos[id(p)] < cut or (pos[id(p)] == cut and not p.skip_own_answer)
            )
            self._cuts[k] = got
        return got

    async def run_upstream_request(self, ctx: RequestContext) -> None:
        """Run ``on_upstream_request`` in order; called once per attempt.

        Every attempt starts from the headers as they were before the first attempt's hooks,
        so a retry never carries what a failed attempt added (a duplicated signature, say).
        """
        items = ctx.upstream_request.headers.raw()
        saved = ctx.state.get(_PRE_ATTEMPT)
        if saved is None:
            ctx.state[_PRE_ATTEMPT] = list(items)
        else:
            items[:] = saved
        for p in self.on_upstream_request:
            try:
                await p.on_upstream_request(ctx)
            except Exception as e:
                raise _wrap(p, "on_upstream_request", e) from e

    async def run_response(self, ctx: RequestContext) -> None:
        """Run ``on_response`` in reverse order, skipping plugins a short-circuit skipped."""
        trace = ctx.trace
        tracer = ctx.extra.get("_tracer")
        plugins = self.on_response if ctx.reached is None else self._ran(ctx, self.on_response)
        for p in plugins:
            t0 = time.perf_counter() if trace is not None else 0.0
            tok = tracer.start_phase(ctx, p.name, "on_response") if tracer is not None else None
            try:
                await p.on_response(ctx)
            except Exception as e:
                err = _wrap(p, "on_response", e)
                if tracer is not None:
                    tracer.end_phase(tok, err)
                raise err from e
            if tracer is not None:
                tracer.end_phase(tok)
            if trace is not None:
                ctx.record("on_response", p.name, _ms(t0))

    async def run_chunk(self, ctx: RequestContext, chunk: bytes, end: bool) -> bytes:
        """Pass ``chunk`` through ``on_response_chunk`` hooks in reverse order."""
        plugins = self.on_response_chunk
        if ctx.reached is not None:
            plugins = self._ran(ctx, plugins)
        for p in plugins:
            try:
                chunk = await p.on_response_chunk(ctx, chunk, end)
            except Exception as e:
                raise _wrap(p, "on_response_chunk", e) from e
        return chunk

    async def run_error(self, ctx: RequestContext, exc: BaseException) -> Response | None:
        """Ask ``on_error`` hooks (reverse order) for a reply; the first one given wins.
        A hook that raises is logged and skipped."""
        for p in self.on_error:
            try:
                resp = await p.on_error(ctx, exc)
            except Exception as e:
                log.error("plugin %s failed in on_error: %s", p.name, e, exc_info=e)
                continue
            if resp is not None:
                return resp
        return None

    def run_log(self, ctx: RequestContext) -> None:
        """Run every ``on_log`` hook (reverse order), short-circuit or not; never raises."""
        hooks = self._log_hooks
        for i, p in enumerate(self.on_log):
            try:
                h = hooks[i]
                if h is not None:
                    h.log(ctx)
                else:
                    p.on_log(ctx)
            except Exception as e:  # on_log never breaks a request
                log.error("plugin %s failed in on_log: %s", p.name, e, exc_info=e)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to completion, without an event loop step; one
    that suspends raises :class:`HookSuspended` with it (not closed: it can be resumed)."""
    try:
        yielded = coro.send(None)
    except StopIteration as e:
        return cast(T, e.value)
    raise HookSuspended(coro, yielded)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


EMPTY_CHAIN: Final = Chain(())
