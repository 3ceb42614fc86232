"""The access log's line for one request, and the buffer the writer thread drains (compiled
with mypyc, setup.py ``HOT_MODULES``).

The fields and their order are the plugin's contract (see ``AccessLogPlugin``). The line is
spelled straight into one string (one f-string build, one encode) instead of a dict handed to
orjson: the dict's sixteen insertions, two ``round(x, 3)`` calls (each a correctly rounded
decimal conversion) and a format spec per request cost more than the serialisation itself.
Strings the client controls (path, user agent, request id, client address) are quoted by a
check for characters JSON must escape and fall back to orjson when there is one; strings the
configuration names (route, upstream, target, consumer, variant) are quoted once and kept.
Numbers: milliseconds with three decimals (``12.345``, ``0.000``), as JSON numbers.
"""

from __future__ import annotations

import time
from time import perf_counter
from time import time as now_s
from typing import Any, Final

import orjson

from portway.pipeline.context import RequestContext
from portway.pipeline.runner import LogHook
from portway.upstream.choice import CHOICE

#: fields added only when the request set them
_OPTIONAL: Final[tuple[str, ...]] = ("profile", "graphql_operation", "aggregate")
#: "000" .. "999": the three decimals of a millisecond count, by index
_MS3: Final[tuple[str, ...]] = tuple(f"{i:03d}" for i in range(1000))
#: quoted names kept (a bound: consumer names may come from tokens, agents from clients)
_MAX_NAMES: Final = 4096


def plain(s: str) -> bool:
    """No character of ``s`` is one JSON must escape: a control character, a quote, a
    backslash (orjson leaves the rest, non-ASCII included, as UTF-8). Compiled,
    ``ord(s[i])`` reads the code point in place: a few instructions a character, where a
    method call (``isprintable``, a regex search) costs hundreds before the first."""
    for i in range(len(s)):
        c = ord(s[i])
        if c < 32 or c == 34 or c == 92:
            return False
    return True


def inner(s: str) -> str:
    """:func:`quote` without its enclosing quotes (the line's f-string has them)."""
    if plain(s):
        return s
    return orjson.dumps(s).decode()[1:-1]


def quote(s: str) -> str:
    """``s`` as a JSON string literal (what ``orjson.dumps(s)`` spells): orjson only when
    some character needs an escape."""
    if plain(s):
        return '"' + s + '"'
    return orjson.dumps(s).decode()


def _us(seconds: float) -> int:
    """``seconds`` as whole microseconds, rounded, never negative."""
    us = int(seconds * 1_000_000.0 + 0.5)
    return us if us > 0 else 0


def ms3(seconds: float) -> str:
    """``seconds`` as milliseconds with three decimals, a JSON number (never negative)."""
    us = _us(seconds)
    return f"{us // 1000}.{_MS3[us % 1000]}"


def _optional(extra: dict[str, Any]) -> str:
    """The optional fields, only when set: BFF profile, GraphQL operation, aggregate calls
    (status, ms, error)."""
    more: list[str] = []
    for k in _OPTIONAL:
        v: Any = extra.get(k)
        if v is not None:
            more.append(f',"{k}":{orjson.dumps(v).decode()}')
    return "".join(more)


class LineFormatter:
    """Formats lines; keeps the current second's formatted stamp and the quoted names of
    routes, upstreams, targets and consumers (one per binding)."""

    def __init__(self) -> None:
        self.sec = -1
        self.stamp = ""
        self.names: dict[str, str] = {}
        #: user agents as sent -> quoted (no decoding of a repeated agent; bounded as names)
        self.agents: dict[bytes, str] = {}

    def name(self, s: str | None) -> str:
        """A name that repeats quoted (kept), or ``null``."""
        if s is None:
            return "null"
        names = self.names
        q = names.get(s)
        if q is None:
            if len(names) >= _MAX_NAMES:
                names.clear()
            q = names[s] = quote(s)
        return q

    def agent(self, ua: bytes) -> str:
        """A user agent quoted (kept)."""
        agents = self.agents
        q = agents.get(ua)
        if q is None:
            if len(agents) >= _MAX_NAMES:
                agents.clear()
            q = agents[ua] = quote(ua.decode("latin-1"))
        return q

    def line(self, ctx: RequestContext) -> bytes:
        """One JSON line, newline-terminated."""
        req = ctx.request
        resp = ctx.response
        t = ctx.target
        ua = req.headers.get_raw(b"user-agent")
        now = now_s()
        sec = int(now)
        if sec != self.sec:
            # the formatted second changes once a second, not per request
            self.sec = sec
            self.stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        up_latency = ctx.upstream_latency
        consumer = ctx.consumer
        body = req.body
        rid = ctx.request_id
        match = ctx.match
        st = ctx._state  # (variant_of's test, inline: most requests have no state)
        choice = st.get(CHOICE) if st is not None else None
        extra = ctx.extra
        tail = _optional(extra) if extra else ""
        # the request id's quotes and text as pieces of the one build (no concatenation)
        rq = '"' if rid else ""
        # milliseconds as ``ms3`` spells them, as pieces too (no string per number)
        lat = _us(perf_counter() - ctx.start)
        if up_latency is not None:
            up_us = _us(up_latency)
            up_ms = str(up_us // 1000)
            up_dot = "."
            up_frac = _MS3[up_us % 1000]
        else:
            up_ms, up_dot, up_frac = "null", "", ""
        text = (
            f'{{"time":"{self.stamp}.{_MS3[int(now * 1000) % 1000]}Z",'
            f'"request_id":{rq}{inner(rid) if rid else "null"}{rq},'
            f'"client_ip":{self.name(req.client_ip)},'
            f'"method":{self.name(req.method)},'
            f'"path":"{inner(req.path)}",'
            f'"route":{self.name(match.route.name) if match is not None else "null"},'
            f'"upstream":{self.name(ctx.upstream_name)},'
            f'"target":{self.name(t.id) if t is not None else "null"},'
            f'"status":{resp.status if resp is not None else 499},'
            f'"bytes_in":{body.received if body is not None else 0},'
            f'"bytes_out":{ctx.bytes_out},'
            f'"latency_ms":{lat // 1000}.{_MS3[lat % 1000]},'
            f'"upstream_latency_ms":{up_ms}{up_dot}{up_frac},'
            f'"user_agent":{self.agent(ua) if ua is not None else "null"},'
            f'"consumer":{self.name(consumer.username) if consumer is not None else "null"},'
            f'"variant":{self.name(choice.variant) if choice is not None else "null"}'
            f"{tail}}}\n"
        )
        return text.encode()


class LineBuffer:
    """Lines waiting for the writer thread: the event loop appends (``put``), the thread
    takes them all at once (``take``). Both are compiled and call nothing that could let
    the other thread run in between (no interpreted code, no allocation between reading the
    list and appending to it), so the two share the list without a lock: a line appended
    before a ``take`` swapped the list out is in the list taken."""

    def __init__(self, max_queue: int) -> None:
        self.lines: list[bytes] = []
        self.max_queue = max_queue
        #: lines dropped because ``max_queue`` were waiting
        self.dropped = 0

    def put(self, line: bytes) -> None:
        """Queue ``line``; never blocks (a full buffer drops it and counts it)."""
        if len(self.lines) >= self.max_queue:
            self.dropped += 1
            return
        self.lines.append(line)

    def take(self) -> list[bytes]:
        """Every waiting line, oldest first; the buffer is left empty."""
        lines = self.lines
        self.lines = []
        return lines


class AccessLogHook(LogHook):
    """``access_log``'s ``on_log``: format the line, queue it."""

    def __init__(self, fmt: LineFormatter, buf: LineBuffer) -> None:
        self.fmt = fmt
        self.buf = buf

    def log(self, ctx: RequestContext) -> None:
        self.buf.put(self.fmt.line(ctx))
