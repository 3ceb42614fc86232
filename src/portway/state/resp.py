"""Script calls pipelined on one raw RESP connection: the Redis store's hot path.

redis-py's ``Pipeline`` costs ~15 µs of gateway CPU per call (argument encoding per item, a
timeout context and a parser call per reply, a flusher task per busy period).
:class:`ScriptPipe` speaks RESP itself on one dedicated asyncio connection
(:class:`asyncio.Protocol`, no streams, no task):

- ``submit`` appends the call's bytes to an output buffer and returns a future; the first
  call of an event-loop pass schedules one ``write`` of everything buffered with
  ``loop.call_soon``, so the calls of one pass share one write (the round trip counted by
  ``round_trips``) and reach Redis in one read;
- replies are parsed by hiredis' C reader (or, where hiredis is not installed, by
  :class:`RespReader`) in ``data_received`` and resolve the callers'
  futures in order (Redis answers a connection's commands in the order sent). A request
  awaiting a decision therefore awaits exactly one future: no task of its own, no flusher;
- batches are not held back while others are in flight (no added wait at any load):
  pipelining keeps Redis busy while the next pass's calls gather;
- callers may pass the command's parameters pre-encoded (:meth:`submit_packed`, with
  :func:`bulk`): a rate limiter renders the constant part of its call once;
- instead of a future, a caller may pass a :class:`ReplyWaiter` (:meth:`submit_to`): its
  ``resolved(reply)`` or ``failed(exc)`` is called straight from ``data_received`` (or from
  the failure that ends the connection) — no future, no ``call_soon`` per call. The task-free
  path's rate-limit decisions take this way (``plugins/_ratelimit/redis_hooks.py``).

Failures: a refused or timed-out connect, a connection lost with calls pending, a reader
protocol error or no reply for ``timeout`` seconds while calls are pending fail every pending
call with :class:`StoreUnavailableError`, report ``on_failure(exc)`` once and drop the
connection (the next call opens a new one). A script's own error reply fails only its call.
A ``NOSCRIPT`` reply (the server lost its script cache) sends that call again as ``EVAL``
with the source, which also caches the script.

Only plain TCP and unix-socket URLs of one server take this path; TLS, Cluster and Sentinel
stay on redis-py (:mod:`portway.state.batch`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, cast

from portway.state.backoff import Backoff
from portway.state.base import LuaScript, ScriptArg, StoreUnavailableError
from portway.state.luabatch import STRIDES, batch_script
from portway.state.respbatch import BatchLayout, bulk, command, pack_params
from portway.state.respreader import RespProtocolError, RespReader, RespReplyError

__all__ = [
    "Backoff",
    "ReplyWaiter",
    "RespProtocolError",
    "RespReader",
    "RespReplyError",
    "ScriptPipe",
    "bulk",
    "command",
    "pack_params",
]

hiredis: Any
try:
    import hiredis as _hiredis_module

    hiredis = _hiredis_module
except ImportError:  # pragma: no cover - a plain dependency; the fallback is tested directly
    hiredis = None

log = logging.getLogger("portway.state")


def _new_reader() -> Any:
    return hiredis.Reader() if hiredis is not None else RespReader()


#: what reading raises on bytes that are not RESP (IndexError: a reply nobody asked for)
_PROTOCOL_ERRORS: Final[tuple[type[Exception], ...]] = (
    (hiredis.ProtocolError, RespProtocolError, IndexError)
    if hiredis is not None
    else (RespProtocolError, IndexError)
)


class ReplyWaiter(Protocol):
    """Told a call's outcome by plain calls (:meth:`ScriptPipe.submit_to`), exactly once:
    ``resolved`` with the reply, or ``failed`` with a
    :class:`~portway.state.base.StoreUnavailableError`. Both are called from the
    connection's callbacks and must not raise (what they raise is logged). (A protocol:
    the compiled rate-limit decision implements it; anything not a future is a waiter.)"""

    def resolved(self, reply: Any) -> None: ...

    def failed(self, exc: StoreUnavailableError) -> None: ...


class _Batch:
    """The calls one batch ``EVALSHA`` answers (``state/luabatch.py``): its reply is an
    array with one element per call, in order, or (``stride`` > 0) ``stride`` elements per
    call, flat."""

    __slots__ = ("calls", "stride")

    def __init__(self, calls: list[_Queued], stride: int) -> None:
        self.calls = calls
        self.stride = stride


#: a pending call: its future or waiter (None for the connection's own AUTH/SELECT; a
#: :class:`_Batch` for a batch call), the script and its packed parameters (to send it
#: again as EVAL after NOSCRIPT)
_Pending = tuple[
    "asyncio.Future[Any] | ReplyWaiter | _Batch | None", "LuaScript | None", int, bytes
]
#: a call not yet written: a pending call and how to send it (_SHA, _EVAL, _RAW)
_Queued = tuple[
    "asyncio.Future[Any] | ReplyWaiter | _Batch | None", "LuaScript | None", int, bytes, int
]
_SHA: Final = 0  # EVALSHA, the parameters after it (may join a batch)
_EVAL: Final = 1  # EVAL with the source (after NOSCRIPT)
_RAW: Final = 2  # a whole command (the connection's AUTH / SELECT)

#: calls of one script per batch call: bounds how long one script holds Redis' thread
MAX_BATCH: Final = 256


class _Conn:
    """One TCP/unix connection of a :class:`ScriptPipe` (a new one per reconnect, so a late
    ``connection_lost`` of an old connection cannot touch its successor). Implements
    asyncio's protocol methods without subclassing ``asyncio.Protocol`` (a Python base class
    would keep mypyc from compiling it: ``http/flow.py`` ``as_protocol``)."""

    def __init__(self, pipe: ScriptPipe) -> None:
        self.pipe = pipe
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it
        self.transport = cast(asyncio.Transport, transport)
        self.pipe._made(self)

    def data_received(self, data: bytes) -> None:
        self.pipe._data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe._lost(self, exc)


class ScriptPipe:
    """One pipelined RESP connection for script calls; see the module docstring.

    ``round_trips`` counts writes (each carries every call of one loop pass), ``calls`` the
    calls sent; both for tests and benchmarks.
    """

    def __init__(
        self,
        *,
        # (the keyword-only arguments without a default first: mypyc's signature text
        # rejects the other order)
        describe: Callable[[], str],
        on_failure: Callable[[BaseException], None],
        on_success: Callable[[], None],
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 0.25,
        timeout: float = 0.25,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._port = port
        self._path = path
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._describe = describe
        self._on_failure = on_failure
        self._on_success = on_success
        #: the store's failure backoff: :meth:`submit_to` asks it first
        self._backoff = backoff
        self._clock = clock
        prelude: list[bytes] = []
        if password:
            words: tuple[str, ...] = (username, password) if username else (password,)
            prelude.append(command("AUTH", *words))
        if db:
            prelude.append(command("SELECT", db))
        self._prelude = prelude
        self._conn: _Conn | None = None
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader = _new_reader()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._queue: list[_Queued] = []  # calls of this pass, not yet written
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._suspect = False  # the watchdog saw no progress once; it looks again
        self._progress = 0.0  # loop time of the last reply (or of a send to an idle pipe)
        # EVALSHA / EVAL heads per (script, parameter count): a call adds only its parameters
        self._heads: dict[tuple[str, int], bytes] = {}
        # batch scripts this pipe sent as EVAL (which caches them): EVALSHA from then on
        self._batch_loaded: set[str] = set()
        # the batch calls' parameters (keeps each packed call's parts between batches)
        self._layout = BatchLayout()
        self._closed = False
        self.round_trips = 0
        self.calls = 0
        #: script commands written (a batch of K calls is one)
        self.commands = 0

    # -- submitting ---------------------------------------------------------------------

    def submit(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> asyncio.Future[Any]:
        """Queue one EVALSHA; the future resolves to its reply."""
        n, params = pack_params(keys, args)
        return self.submit_packed(script, n, params)

    def submit_packed(self, script: LuaScript, nparams: int, params: bytes) -> asyncio.Future[Any]:
        """Queue one EVALSHA whose ``nparams`` parameters (numkeys, keys, args: RESP bulk
        strings, see :func:`bulk`) are ``params``; the future resolves to its reply."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            fut.set_exception(StoreUnavailableError("redis store closed"))
            return fut
        self._queue.append((fut, script, nparams, params, _SHA))
        self.calls += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._transport is not None:
                # the first call of this pass: one write for every call of the pass
                loop.call_soon(self._flush)
            elif self._connecting is None:
                self._connecting = loop.create_task(self._connect())
        return fut

    def submit_to(
        self, script: LuaScript, nparams: int, params: bytes, waiter: ReplyWaiter
    ) -> None:
        """:meth:`submit_packed` telling ``waiter`` instead of resolving a future (never
        from inside this call: a closed pipe, or the store's backoff while open, raises
        :class:`StoreUnavailableError`)."""
        if self._closed:
            raise StoreUnavailableError("redis store closed")
        backoff = self._backoff
        if backoff is not None and not backoff.allow(self._clock()):
            raise StoreUnavailableError(f"redis at {self._describe()} unavailable (backing off)")
        self._queue.append((waiter, script, nparams, params, _SHA))
        self.calls += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._transport is not None:
                asyncio.get_running_loop().call_soon(self._flush)
            elif self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())

    def _head(self, script: LuaScript, nparams: int, *, source: bool) -> bytes:
        if source:
            return b"*%d\r\n$4\r\nEVAL\r\n%s" % (nparams + 2, bulk(script.source))
        head = b"*%d\r\n$7\r\nEVALSHA\r\n%s" % (nparams + 2, bulk(script.sha))
        self._heads[(script.sha, nparams)] = head
        return head

    def _flush(self) -> None:
        self._flush_scheduled = False
        t = self._transport
        queue = self._queue
        if t is None or not queue:
            return
        pending = self._pending
        if not pending:
            # nothing was awaiting a reply: the timeout counts from now
            self._progress = _loop_time()
            if self._watchdog is None:
                self._arm(self._timeout)
        self._queue = []
        out: list[bytes] = []
        i = 0
        n = len(queue)
        while i < n:
            target, script, nparams, params, mode = queue[i]
            if mode == _SHA and script is not None:
                # a run of calls of this script: one batch call (state/luabatch.py)
                j = i + 1
                while j < n and j - i < MAX_BATCH and queue[j][1] is script and queue[j][4] == _SHA:
                    j += 1
                if j - i > 1:
                    self._batch(script, queue, i, j, out)
                    i = j
                    continue
                head = self._heads.get((script.sha, nparams))
                if head is None:
                    head = self._head(script, nparams, source=False)
                out.append(head)
            elif mode == _EVAL and script is not None:
                out.append(self._head(script, nparams, source=True))
            out.append(params)
            pending.append((target, script, nparams, params))
            self.commands += 1
            i += 1
        self.round_trips += 1
        t.write(b"".join(out))

    def _batch(
        self, script: LuaScript, queue: list[_Queued], i: int, j: int, out: list[bytes]
    ) -> None:
        """Queue the calls ``queue[i:j]`` (all of ``script``) as one batch call, each
        distinct key list and argument list once (``state/luabatch.py`` layout)."""
        batch = batch_script(script)
        laid = self._layout.lay(queue, i, j)
        if laid is None:  # a call with more keys or arguments than the layout holds
            for m in range(i, j):
                self._single(queue[m], out)
            return
        bparams, bn = laid
        calls = queue[i:j]
        if batch.sha in self._batch_loaded:
            out.append(b"*%d\r\n$7\r\nEVALSHA\r\n%s" % (bn + 2, bulk(batch.sha)))
        else:
            # its first use on this pipe: EVAL caches it (no NOSCRIPT round trip)
            self._batch_loaded.add(batch.sha)
            out.append(self._head(batch, bn, source=True))
        out.append(bparams)
        self._pending.append((_Batch(calls, STRIDES.get(batch.sha, 0)), batch, bn, bparams))
        self.commands += 1

    def _single(self, call: _Queued, out: list[bytes]) -> None:
        """Queue one call as its own ``EVALSHA``."""
        target, script, nparams, params, _m = call
        assert script is not None
        head = self._heads.get((script.sha, nparams))
        if head is None:
            head = self._head(script, nparams, source=False)
        out.append(head)
        out.append(params)
        self._pending.append((target, script, nparams, params))
        self.commands += 1

    # -- connection ---------------------------------------------------------------------

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._path is not None:
                    await loop.create_unix_connection(self._protocol, self._path)
                else:
                    await loop.create_connection(self._protocol, self._host, self._port)
        except (OSError, TimeoutError) as e:
            self._connecting = None
            self._fail(e)
            return
        except BaseException as e:  # cancelled (shutdown): nobody will send the calls
            self._connecting = None
            self._fail(e, report=False)
            raise
        self._connecting = None

    def _protocol(self) -> asyncio.Protocol:
        return cast(asyncio.Protocol, _Conn(self))

    def _made(self, conn: _Conn) -> None:
        transport = conn.transport
        assert transport is not None
        if self._closed:
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and self._path is None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = conn
        self._transport = transport
        self._reader = _new_reader()
        if self._prelude:
            # AUTH / SELECT go first; their replies are checked like any other
            self._queue[:0] = [(None, None, 0, cmd, _RAW) for cmd in self._prelude]
        self._flush_scheduled = False
        self._flush()

    def _data(self, conn: _Conn, data: bytes) -> None:
        if conn is not self._conn:
            return  # a dropped connection's last bytes
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        told = False  # the store was told the server answers (before any waiter runs)
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                fut, script, nparams, params = pending.popleft()
                if isinstance(reply, Exception):  # an error reply (hiredis' or ours)
                    self._error_reply(reply, fut, script, nparams, params)
                    if self._conn is not conn:
                        return  # the set-up was refused: the connection is gone
                elif fut is None:
                    pass  # AUTH / SELECT accepted
                elif isinstance(fut, asyncio.Future):
                    if not fut.done():
                        fut.set_result(reply)
                elif isinstance(fut, _Batch):
                    if not told:
                        told = True
                        self._progress = _loop_time()
                        self._on_success()
                    self._batch_reply(fut, reply)
                else:
                    if not told:
                        # a waiter carries its request on at once (it may call again):
                        # the backoff must know the server answers first
                        told = True
                        self._progress = _loop_time()
                        self._on_success()
                    try:
                        fut.resolved(reply)
                    except Exception:  # (a bug in the waiter: the other calls go on)
                        log.exception("redis reply waiter failed")
        except _PROTOCOL_ERRORS as e:  # garbage, or a reply nobody asked
            self._drop(e)
            return
        if not told:
            self._progress = _loop_time()
            self._on_success()

    def _batch_reply(self, batch: _Batch, reply: Any) -> None:
        """Answer each call of ``batch`` with its part of the batch's reply."""
        calls = batch.calls
        stride = batch.stride
        if not isinstance(reply, list) or len(reply) != len(calls) * (stride or 1):
            err = StoreUnavailableError(f"redis at {self._describe()}: bad batch reply")
            for target, *_ in calls:
                _tell_failed(target, err)
            return
        flat: list[Any] = reply
        i = 0
        for target, script, nparams, params, _m in calls:
            if stride:
                r: Any = flat[i : i + stride]
                e: Any = r[0]
                i += stride
            else:
                r = e = flat[i]
                i += 1
            if isinstance(e, Exception):  # that call raised: its own error, as unbatched
                self._error_reply(e, target, script, nparams, params)
            elif isinstance(target, asyncio.Future):
                if not target.done():
                    target.set_result(r)
            elif target is not None and not isinstance(target, _Batch):
                try:
                    target.resolved(r)
                except Exception:  # (a bug in the waiter: the other calls go on)
                    log.exception("redis reply waiter failed")

    def _error_reply(
        self,
        reply: Exception,
        fut: asyncio.Future[Any] | ReplyWaiter | _Batch | None,
        script: LuaScript | None,
        nparams: int,
        params: bytes,
    ) -> None:
        msg = str(reply)
        if fut is None or script is None:
            # AUTH or SELECT refused: this connection is of no use
            self._drop(ConnectionError(f"redis refused the connection set-up: {msg}"))
            return
        if msg.startswith("NOSCRIPT") and not (isinstance(fut, asyncio.Future) and fut.done()):
            # the server lost its script cache (restart, failover): EVAL caches it again
            self._queue.append((fut, script, nparams, params, _EVAL))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
            return
        # a script error answers this call only; the server itself is fine
        err = StoreUnavailableError(f"redis at {self._describe()}: {msg}")
        err.__cause__ = reply
        _tell_failed(fut, err)

    def _lost(self, conn: _Conn, exc: Exception | None) -> None:
        if conn is not self._conn:
            return  # dropped by us already; its calls were failed then
        self._conn = None
        self._transport = None
        if self._pending or self._queue:
            self._fail(exc or ConnectionError("redis closed the connection"))

    # -- failure ------------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._watchdog = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        """No reply for ``timeout`` seconds while calls are pending: the server is gone."""
        self._watchdog = None
        suspect, self._suspect = self._suspect, False
        if (not self._pending and not self._queue) or self._transport is None:
            return
        idle = _loop_time() - self._progress
        if idle < self._timeout:
            self._arm(self._timeout - idle)
        elif not suspect:
            # timers run before the loop polls its sockets: after a stall of this process
            # (a loaded machine) the replies may be waiting unread. Look once more after the
            # next poll before calling the server gone.
            self._suspect = True
            self._arm(0.001)
        else:
            self._drop(TimeoutError(f"no reply from redis in {self._timeout:g}s"))

    def _drop(self, exc: BaseException) -> None:
        t = self._transport
        self._transport = None
        self._conn = None
        if t is not None:
            t.abort()  # its connection_lost follows and is ignored: calls are failed now
        self._fail(exc)

    def _fail(self, exc: BaseException, *, report: bool = True) -> None:
        """Fail every queued and pending call with ``exc`` and forget the connection."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._suspect = False
        pending: list[Any] = list(self._pending)
        pending += self._queue
        self._pending.clear()
        self._queue = []
        self._flush_scheduled = False
        self._reader = _new_reader()
        if report:
            self._on_failure(exc)
        err = StoreUnavailableError(f"redis at {self._describe()}: {exc or 'connection lost'}")
        for fut, *_ in pending:
            _tell_failed(fut, err)

    async def aclose(self) -> None:
        """Close the connection; pending and later calls fail."""
        self._closed = True
        task = self._connecting
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        t = self._transport
        self._transport = None
        self._conn = None
        if t is not None:
            t.close()
        self._fail(ConnectionError("redis store closed"), report=False)


def _tell_failed(
    fut: asyncio.Future[Any] | ReplyWaiter | _Batch | None, err: StoreUnavailableError
) -> None:
    if fut is None:
        return
    if isinstance(fut, _Batch):
        for target, *_ in fut.calls:
            _tell_failed(target, err)
        return
    if isinstance(fut, asyncio.Future):
        if not fut.done():
            fut.set_exception(err)
        return
    try:
        fut.failed(err)
    except Exception:
        log.exception("redis reply waiter failed")


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
