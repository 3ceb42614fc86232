"""RESP encoding of script calls, and the parameters of a batch call.

:func:`bulk`, :func:`pack_params` and :func:`command` render what
:class:`~portway.state.resp.ScriptPipe` writes; :class:`BatchLayout` turns a run of queued
calls of one script into the parameters of its batch variant (the layout is described in
``state/luabatch.py``), each distinct key list and argument list once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from portway.state.base import ScriptArg
from portway.state.luabatch import MAX_COUNT, split_params

#: packed parameters whose batch parts (key list, argument list, their counts) a layout
#: keeps (cleared when full)
_SPLIT_MAX: Final = 4096


def bulk(value: ScriptArg) -> bytes:
    """One RESP bulk string (``$<len>\\r\\n<bytes>\\r\\n``) for a script key or argument."""
    if isinstance(value, bytes):
        b = value
    elif isinstance(value, str):
        b = value.encode()
    elif isinstance(value, float):
        b = repr(value).encode()
    else:
        b = str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(b), b)


def pack_params(keys: Sequence[str], args: Sequence[ScriptArg]) -> tuple[int, bytes]:
    """``numkeys, keys..., args...`` of an EVAL/EVALSHA as (count, RESP bytes)."""
    parts = [bulk(len(keys))]
    parts += [bulk(k) for k in keys]
    parts += [bulk(a) for a in args]
    return len(parts), b"".join(parts)


def command(*words: ScriptArg) -> bytes:
    """A whole RESP command (for the connection's own AUTH/SELECT)."""
    return b"*%d\r\n%s" % (len(words), b"".join(bulk(w) for w in words))


class _Parts:
    """A packed call's parameters split for a batch call: its key list and argument list
    (RESP bytes) and their counts, and the indices the batch that last placed it gave them
    (``batch`` numbers the layout's batch calls)."""

    def __init__(self, kp: bytes, ap: bytes, nk: int, na: int) -> None:
        self.kp = kp
        self.ap = ap
        self.nk = nk
        self.na = na
        self.batch = -1
        self.ki = 0
        self.ai = 0


class BatchLayout:
    """Builds batch calls' parameters for one pipe (not shared: it numbers its batches).

    Keeps each packed call's parts between batches: a binding renders a key's parameters
    once (the same bytes object each time, its hash cached), so a call's parts are found,
    not parsed, and carry the indices of the batch that last placed them (no per-batch
    dict lookup per call of a busy key)."""

    def __init__(self) -> None:
        self._split: dict[bytes, _Parts] = {}
        self._batches = 0

    def lay(
        self, queue: Sequence[tuple[Any, Any, int, bytes, int]], i: int, j: int
    ) -> tuple[bytes, int] | None:
        """The batch call's parameters for the calls ``queue[i:j]`` (each ``(target,
        script, nparams, params, mode)``) and their count; None when a call has more keys or
        arguments than the layout holds (such calls are sent one by one)."""
        split = self._split
        self._batches += 1
        bno = self._batches
        keys = _Lists()
        argv = _Lists()
        order: list[int] = []
        for k in range(i, j):
            _t, _s, nparams, params, _m = queue[k]
            parts = split.get(params)
            if parts is None:
                nk, first, args = split_params(params)
                parts = _Parts(params[first:args], params[args:], nk, nparams - 1 - nk)
                if len(split) >= _SPLIT_MAX:
                    split.clear()
                split[params] = parts
            if parts.batch != bno:
                if parts.nk > MAX_COUNT or parts.na > MAX_COUNT:  # (not in one byte)
                    return None
                parts.batch = bno
                parts.ki = keys.place(parts.kp, parts.nk)
                parts.ai = argv.place(parts.ap, parts.na)
            order.append(parts.ki)
            order.append(parts.ai)
        nkeys = sum(keys.sizes)
        bparams = b"".join(
            [
                bulk(nkeys),
                *keys.lists,
                bulk(bytes(order)),
                bulk(bytes(keys.sizes)),
                bulk(bytes(argv.sizes)),
                *argv.lists,
            ]
        )
        return bparams, 4 + nkeys + sum(argv.sizes)


class _Lists:
    """The distinct key lists (or argument lists) of one batch call, first use first, with
    their sizes."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.lists: list[bytes] = []
        self.sizes: list[int] = []

    def place(self, packed: bytes, size: int) -> int:
        """The index of ``packed`` (``size`` items) in this batch call, added if new."""
        i = self.index.get(packed)
        if i is None:
            i = len(self.lists)
            self.index[packed] = i
            self.lists.append(packed)
            self.sizes.append(size)
        return i
