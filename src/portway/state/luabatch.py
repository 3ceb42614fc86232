"""Batch variants of Lua scripts: K calls of one script as ONE ``EVALSHA``.

Redis pays per ``EVALSHA`` a script lookup, a Lua call set-up (KEYS/ARGV tables, the run
context, timeouts, propagation) and a reply, and per parameter a parsed bulk string, an
object and a Lua string: for a one-key rate-limit decision that is most of the server's
work. :class:`~portway.state.resp.ScriptPipe` therefore sends a run of consecutive calls of
one script, queued in one event-loop pass, as one call of the script's batch variant
(:func:`batch_script`), each distinct key list and argument list sent once::

    KEYS    = the distinct key lists of the calls, concatenated (first use first)
    ARGV[1] = the calls, 2 bytes each: its key list's index, its argument list's index
              (0-based; a batch has at most 256 calls, so at most 256 of each)
    ARGV[2] = one byte per key list: its key count
    ARGV[3] = one byte per argument list: its argument count
    ARGV[4...] = the distinct argument lists, concatenated
    reply   = per call: its reply (an error reply element when that call raised)

(:class:`~portway.state.respbatch.BatchLayout` builds it; a call with more than 255 keys or
arguments is sent alone.)
A busy key of one binding — one client's requests — is one key and one argument list
however many of its decisions a batch carries.

The generic batch script wraps the original body, unchanged, as a local function taking
``KEYS`` and ``ARGV`` (fresh tables per call, as alone) and calls it once per call, in
order, inside the one atomic script: each call does the same per-key arithmetic as alone and
sees the writes of the calls before it, exactly as the same calls pipelined one by one (Redis
runs a connection's commands in order and a script atomically). A call that raises
(``redis.call`` on a bad command, a wrong type) is caught with ``pcall`` and answers its own
element as an error, as it would have answered its own ``EVALSHA``; what it wrote before
raising stays written, as unbatched. A ``nil`` reply becomes ``false`` (Redis' nil bulk
string), so it cannot cut the reply array short.

Only for one plain server: in a Cluster the keys of one call must share a slot, and the calls
of different requests do not (``state/batch.py`` keeps them one call each).
"""

from __future__ import annotations

from typing import Final

from portway.state.base import LuaScript

_TEMPLATE: Final = """local function one(KEYS, ARGV)
%s
end
local byte = string.byte
local calls, ksz, asz = ARGV[1], ARGV[2], ARGV[3]
local kfirst, afirst = {}, {}
local k = 0
for g = 1, #ksz do kfirst[g] = k; k = k + byte(ksz, g) end
local a = 3
for g = 1, #asz do afirst[g] = a; a = a + byte(asz, g) end
local out = {}
for n = 1, #calls / 2 do
  local ki, ai = byte(calls, 2 * n - 1, 2 * n)
  local keys, argv = {}, {}
  local k0, a0 = kfirst[ki + 1], afirst[ai + 1]
  for i = 1, byte(ksz, ki + 1) do keys[i] = KEYS[k0 + i] end
  for i = 1, byte(asz, ai + 1) do argv[i] = ARGV[a0 + i] end
  local ok, r = pcall(one, keys, argv)
  if not ok then
    if type(r) == 'table' and r.err then r = {err = r.err} else r = {err = tostring(r)} end
  elseif r == nil then
    r = false
  end
  out[n] = r
end
return out
"""

#: a call's key or argument count above this is not batched (one byte in the layout)
MAX_COUNT: Final = 255

_BATCHES: dict[str, LuaScript] = {}


#: batch script sha -> its reply's stride (0 or absent: one element per call)
STRIDES: dict[str, int] = {}


def register_batch(script: LuaScript, source: str, stride: int = 0) -> LuaScript:
    """Use ``source`` as ``script``'s batch variant: the same ``KEYS``/``ARGV`` layout as the
    generic wrapper, written for the script (e.g. one ``TIME`` per batch, each key read and
    written once). It must answer each call exactly as ``script`` run alone, in order, would.
    ``stride`` > 0: the reply is flat, ``stride`` elements per call (the elements of the
    call's own array reply, which must have that length; a call that failed has its error
    first) — cheaper for Redis to build than one nested array per call."""
    b = LuaScript(source)
    _BATCHES[script.sha] = b
    if stride:
        STRIDES[b.sha] = stride
    return b


def batch_script(script: LuaScript) -> LuaScript:
    """The batch variant of ``script`` (see the module docstring), built once per script."""
    b = _BATCHES.get(script.sha)
    if b is None:
        b = LuaScript(_TEMPLATE % script.source)
        _BATCHES[script.sha] = b
    return b


def split_params(params: bytes) -> tuple[int, int, int]:
    """Where the parts of packed parameters (``numkeys, keys..., args...`` as RESP bulk
    strings: ``resp.pack_params``) are: (key count, offset of the first key, offset of the
    first argument)."""
    e = params.index(b"\r\n")
    start = e + 2
    size = int(params[1:e])
    nk = int(params[start : start + size])
    pos = start + size + 2
    first = pos
    for _ in range(nk):
        e = params.index(b"\r\n", pos)
        pos = e + 2 + int(params[pos + 1 : e]) + 2
    return nk, first, pos
