"""Batch variants of Lua scripts: K calls of one script as ONE ``EVALSHA``.

Redis pays per ``EVALSHA`` a script lookup, a Lua call set-up (KEYS/ARGV tables, the run
context, timeouts, propagation) and a reply: for a one-key rate-limit decision that is most
of the server's work. :class:`~portway.state.resp.ScriptPipe` therefore sends a run of
consecutive calls of one script, queued in one event-loop pass, as one call of the script's
batch variant (:func:`batch_script`)::

    KEYS  = the calls' keys, in call order
    ARGV  = per call: its key count, its argument count, its arguments
    reply = per call: its reply (an error reply element when that call raised)

The batch script wraps the original body, unchanged, as a local function taking ``KEYS`` and
``ARGV`` and calls it once per call, in order, inside the one atomic script: each call does
the same per-key arithmetic as alone and sees the writes of the calls before it, exactly as
the same calls pipelined one by one (Redis runs a connection's commands in order and a script
atomically). A call that raises (``redis.call`` on a bad command, a wrong type) is caught with
``pcall`` and answers its own element as an error, as it would have answered its own
``EVALSHA``; what it wrote before raising stays written, as unbatched. A ``nil`` reply becomes
``false`` (Redis' nil bulk string), so it cannot cut the reply array short.

Only for one plain server: in a Cluster the keys of one call must share a slot, and the calls
of different requests do not (``state/batch.py`` keeps them one call each).
"""

from __future__ import annotations

from typing import Final

from portway.state.base import LuaScript

_TEMPLATE: Final = """local function one(KEYS, ARGV)
%s
end
local out = {}
local k, a, n = 0, 1, 0
local last = #ARGV
while a <= last do
  local nk = tonumber(ARGV[a])
  local na = tonumber(ARGV[a + 1])
  a = a + 2
  local keys, argv = {}, {}
  for i = 1, nk do keys[i] = KEYS[k + i] end
  for i = 1, na do argv[i] = ARGV[a + i - 1] end
  k = k + nk
  a = a + na
  n = n + 1
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

_BATCHES: dict[str, LuaScript] = {}


def register_batch(script: LuaScript, source: str) -> LuaScript:
    """Use ``source`` as ``script``'s batch variant: the same ``KEYS``/``ARGV``/reply layout
    as the generic wrapper, written for the script (e.g. one ``TIME`` per batch, each key
    read and written once). It must answer each call exactly as ``script`` run alone, in
    order, would."""
    b = LuaScript(source)
    _BATCHES[script.sha] = b
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
