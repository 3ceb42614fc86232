"""Redis Lua scripts: every limit of a request decided in one atomic round trip.

``RATE_LIMIT`` mirrors :mod:`.algorithms` exactly (same definitions, same tolerance) with time
in microseconds taken from ``redis.call('TIME')`` so gateway clock skew does not matter.
Layout::

    KEYS  = one state key per limit (all share one {hash tag}: one Cluster slot)
    ARGV  = algorithm, cost, now_override, then (rate, per_us, burst) per limit
    reply = {allowed, then (remaining, reset_ms, retry_ms) per limit}; retry_ms -1 = never

All-or-nothing: states are written only when every limit admits the request, so a rejected
request consumes nothing. Each written key gets a PEXPIRE covering the time until its state
equals a fresh one (plus one second), so idle keys vanish. ``now_override`` must be empty in
production; tests pass a fake clock through it to compare this script with the Python model.
"""

from __future__ import annotations

from portway.state.base import LuaScript
from portway.state.luabatch import register_batch

RATE_LIMIT = LuaScript(
    r"""
local algo = ARGV[1]
local cost = tonumber(ARGV[2])
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local EPS = 1e-9
local allowed = true
local out = {0}
local writes = {}
local oks = {}
local function f(x) return string.format('%.17g', x) end
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = 3 + (i - 1) * 3
  local rate = tonumber(ARGV[base + 1])
  local per = tonumber(ARGV[base + 2])
  local burst = tonumber(ARGV[base + 3])
  local ok, rem, reset, retry, expires, w
  if algo == 'gcra' then
    local t = per / rate
    local tat = tonumber(redis.call('GET', key))
    if not tat or tat < now then tat = now end
    local new_tat = tat + cost * t
    local allow_at = new_tat - burst * t
    if allow_at - now > EPS * t then
      ok = false
      rem = math.max(0, math.floor((now - (tat - burst * t)) / t + EPS))
      reset = tat - now
      if cost > burst then retry = -1 else retry = allow_at - now end
    else
      ok = true
      rem = math.max(0, math.floor((now - allow_at) / t + EPS))
      reset = new_tat - now
      retry = 0
      expires = new_tat
      w = {'SET', f(new_tat)}
    end
  elseif algo == 'token_bucket' then
    local s = redis.call('HMGET', key, 't', 'ts')
    local tokens = burst
    if s[1] then
      tokens = math.min(burst, tonumber(s[1]) + math.max(0, now - tonumber(s[2])) * rate / per)
    end
    if tokens + EPS < cost then
      ok = false
      rem = math.floor(tokens + EPS)
      reset = (burst - tokens) * per / rate
      if cost > burst then retry = -1 else retry = (cost - tokens) * per / rate end
    else
      ok = true
      tokens = tokens - cost
      reset = (burst - tokens) * per / rate
      rem = math.max(0, math.floor(tokens + EPS))
      retry = 0
      expires = now + reset
      w = {'HSET', 't', f(tokens), 'ts', f(now)}
    end
  elseif algo == 'fixed_window' then
    local wid = math.floor(now / per)
    local s = redis.call('HMGET', key, 'w', 'c')
    local count = 0
    if s[1] and tonumber(s[1]) == wid then count = tonumber(s[2]) end
    local wend = (wid + 1) * per
    reset = wend - now
    if count + cost > rate then
      ok = false
      rem = math.max(0, rate - count)
      if cost > rate then retry = -1 else retry = wend - now end
    else
      ok = true
      count = count + cost
      rem = rate - count
      retry = 0
      expires = wend
      w = {'HSET', 'w', f(wid), 'c', f(count)}
    end
  elseif algo == 'sliding_window' then
    local wid = math.floor(now / per)
    local s = redis.call('HMGET', key, 'w', 'c', 'p')
    local cur, prev = 0, 0
    if s[1] then
      local sw = tonumber(s[1])
      if sw == wid then
        cur = tonumber(s[2]); prev = tonumber(s[3])
      elseif sw == wid - 1 then
        prev = tonumber(s[2])
      end
    end
    local elapsed = now - wid * per
    local weight = 1 - elapsed / per
    local est = prev * weight + cur
    if est + cost > rate + EPS then
      ok = false
      if cost > rate then
        retry = -1
      elseif cur + cost <= rate then
        retry = per * (1 - (rate - cur - cost) / prev) - elapsed
      else
        retry = per - elapsed + math.max(0, per * (1 - (rate - cost) / cur))
      end
      if cur > 0 then reset = 2 * per - elapsed else reset = per - elapsed end
      rem = math.max(0, math.floor(rate - est + EPS))
    else
      ok = true
      cur = cur + cost
      rem = math.max(0, math.floor(rate - (prev * weight + cur) + EPS))
      retry = 0
      if cur > 0 then
        reset = 2 * per - elapsed; expires = (wid + 2) * per
      else
        if prev > 0 then reset = per - elapsed else reset = 0 end
        expires = (wid + 1) * per
      end
      w = {'HSET', 'w', f(wid), 'c', f(cur), 'p', f(prev)}
    end
  else
    return redis.error_reply('unknown algorithm ' .. tostring(algo))
  end
  if not ok then allowed = false end
  writes[i] = {w, expires}
  oks[i] = ok
  out[#out + 1] = rem
  out[#out + 1] = math.ceil(reset / 1000)
  if retry < 0 then out[#out + 1] = -1 else out[#out + 1] = math.ceil(retry / 1000) end
end
if not allowed then
  -- limits that would have admitted report what is left, since nothing was consumed
  for i = 1, #KEYS do
    if oks[i] then out[2 + (i - 1) * 3] = out[2 + (i - 1) * 3] + cost end
  end
else
  out[1] = 1
  for i = 1, #KEYS do
    local w = writes[i][1]
    local ttl = math.ceil((writes[i][2] - now) / 1000) + 1000
    if w[1] == 'SET' then
      redis.call('SET', KEYS[i], w[2], 'PX', ttl)
    else
      redis.call('HSET', KEYS[i], unpack(w, 2))
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
return out
"""
)

#: ``RATE_LIMIT`` for the common binding, one ``gcra`` limit, as straight-line Lua: the same
#: KEYS, ARGV, reply, stored value and expiry (a binding may switch between the two scripts
#: with no effect on its keys), without the per-limit loop, the tables and the closure —
#: Redis runs every decision of every gateway on its one thread, and this is the part of a
#: decision's Redis CPU the script itself controls (docs/performance.md "s8-redisrl").
#: ``test_lua_matches_python_model`` checks it against :mod:`.algorithms` like the general one.
RATE_LIMIT_GCRA1 = LuaScript(
    r"""
local cost = tonumber(ARGV[2])
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local t = tonumber(ARGV[5]) / tonumber(ARGV[4])
local burst = tonumber(ARGV[6])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + cost * t
local allow_at = new_tat - burst * t
if allow_at - now > 1e-9 * t then
  local retry = -1
  if cost <= burst then retry = math.ceil((allow_at - now) / 1000) end
  return {0, math.max(0, math.floor((now - (tat - burst * t)) / t + 1e-9)),
          math.ceil((tat - now) / 1000), retry}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX',
           math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.max(0, math.floor((now - allow_at) / t + 1e-9)),
        math.ceil((new_tat - now) / 1000), 0}
"""
)

#: the batch variant of ``RATE_LIMIT_GCRA1`` (``state/luabatch.py``: K decisions queued in one
#: pass as one script call, each distinct key and argument list sent once). The same
#: arithmetic per decision, in order, but Redis' ``TIME`` is read once per batch (the clock of
#: the one atomic script: the same as the decisions run back to back), each argument list is
#: parsed once and each key is read once and written once, with the value and expiry of its
#: last admitted decision: what the K scripts one by one would leave. ``%.17g`` round trips a
#: double exactly, so keeping a key's value in Lua between decisions reads what ``GET`` would
#: have. A busy key (the usual case: one client, many requests) costs Redis one ``GET`` and
#: one ``SET`` per batch instead of a ``TIME``, ``GET`` and ``SET`` per decision.
#:
#: A key's own error fails that key's decisions only, as unbatched: a ``GET`` that fails
#: (``WRONGTYPE``: the key holds another type) answers each decision of the key with its error;
#: a ``SET`` that fails (e.g. ``OOM``) answers the key's admitted decisions with its error
#: (unbatched each would have failed at its own ``SET``; its rejected ones, which write
#: nothing, keep their answers).
#:
#: The reply is flat (``stride=4``): the calls' four numbers one after another, not a nested
#: array per call (Redis' conversion of a Lua table to a reply costs ~7k instructions per
#: table: it looks up the ``err``, ``ok`` and RESP3 type fields of each); a call answered
#: with an error has the error in its first place.
RATE_LIMIT_GCRA1_BATCH = register_batch(
    RATE_LIMIT_GCRA1,
    r"""
local byte = string.byte
local calls, ksz, asz = ARGV[1], ARGV[2], ARGV[3]
local kfirst = {}
local k = 0
for g = 1, #ksz do kfirst[g] = k + 1; k = k + byte(ksz, g) end
local clock
local costs, nows, ts, bursts = {}, {}, {}, {}
local a = 3
for g = 1, #asz do
  costs[g] = tonumber(ARGV[a + 2])
  if ARGV[a + 3] ~= '' then
    nows[g] = tonumber(ARGV[a + 3])
  else
    if not clock then
      local t = redis.call('TIME')
      clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    nows[g] = clock
  end
  ts[g] = tonumber(ARGV[a + 5]) / tonumber(ARGV[a + 4])
  bursts[g] = tonumber(ARGV[a + 6])
  a = a + byte(asz, g)
end
-- floor(x) is x - x % 1 and ceil(x) is x + (-x) % 1 (Lua's % floors): no C call per decision
local tats, errs, lastv, lastnow, order, out = {}, {}, {}, {}, {}, {}
local ncalls = #calls / 2
for n = 1, ncalls do
  local ki, ai = byte(calls, 2 * n - 1, 2 * n)
  ki = ki + 1
  ai = ai + 1
  local o = 4 * n - 3
  local cur = tats[ki]
  if cur == nil then
    local v = redis.pcall('GET', KEYS[kfirst[ki]])
    if type(v) == 'table' then
      errs[ki] = v
      cur = false
    else
      cur = tonumber(v) or false
    end
    tats[ki] = cur
  end
  local e = errs[ki]
  if e then
    out[o], out[o + 1], out[o + 2], out[o + 3] = e, 0, 0, 0
  else
    local now, cost, t, burst = nows[ai], costs[ai], ts[ai], bursts[ai]
    local tat = cur
    if not tat or tat < now then tat = now end
    local new_tat = tat + cost * t
    local allow_at = new_tat - burst * t
    local rem, reset
    if allow_at - now > 1e-9 * t then
      local retry = -1
      if cost <= burst then
        retry = (allow_at - now) / 1000
        retry = retry + (-retry) % 1
      end
      rem = (now - (tat - burst * t)) / t + 1e-9
      reset = (tat - now) / 1000
      out[o], out[o + 3] = 0, retry
    else
      if lastv[ki] == nil then order[#order + 1] = ki end
      lastv[ki] = new_tat
      lastnow[ki] = now
      tats[ki] = new_tat
      rem = (now - allow_at) / t + 1e-9
      reset = (new_tat - now) / 1000
      out[o], out[o + 3] = 1, 0
    end
    rem = rem - rem % 1
    if rem < 0 then rem = 0 end
    out[o + 1], out[o + 2] = rem, reset + (-reset) % 1
  end
end
for i = 1, #order do
  local ki = order[i]
  local v = lastv[ki]
  local ttl = (v - lastnow[ki]) / 1000
  local r = redis.pcall('SET', KEYS[kfirst[ki]], string.format('%.17g', v), 'PX',
                        ttl + (-ttl) % 1 + 1000)
  if type(r) == 'table' and r.err then
    for n = 1, ncalls do
      if byte(calls, 2 * n - 1) + 1 == ki and out[4 * n - 3] == 1 then out[4 * n - 3] = r end
    end
  end
end
return out
""",
    stride=4,
)

#: concurrency leases: KEYS[1] a sorted set of lease id -> expiry (ms, Redis clock).
#: ARGV = max, lease id, lease ttl ms. Reply = {acquired, in_flight}.
ACQUIRE = LuaScript(
    r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then
  return {0, n}
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
return {1, n + 1}
"""
)

#: give a concurrency lease back: KEYS[1] the lease set, ARGV[1] the lease id.
RELEASE = LuaScript("return redis.call('ZREM', KEYS[1], ARGV[1])")

#: quota counters, one per period (day, month) of the same subject, all-or-nothing.
#: KEYS = counters; ARGV = cost, then (limit, ttl seconds) per key (relative, so a skew
#: between the gateway and Redis clocks cannot expire a counter early).
#: Reply = {allowed, used per key} (used after the request when allowed, else before).
QUOTA = LuaScript(
    r"""
local cost = tonumber(ARGV[1])
local used = {}
local allowed = 1
for i = 1, #KEYS do
  used[i] = tonumber(redis.call('GET', KEYS[i])) or 0
  if used[i] + cost > tonumber(ARGV[2 * i]) then allowed = 0 end
end
if allowed == 1 then
  for i = 1, #KEYS do
    used[i] = redis.call('INCRBY', KEYS[i], cost)
    redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1])
  end
end
local out = {allowed}
for i = 1, #KEYS do out[#out + 1] = used[i] end
return out
"""
)
