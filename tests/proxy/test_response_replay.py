"""A whole upstream response whose head equals the last one the lite parser accepted on the
connection goes to the task-free exchange without llhttp (``UpstreamConnection._replay``).

Differential: the same exchanges run through a real gateway (config, router, task-free path,
pooled upstream connection) twice, on in-memory transports, once as it runs and once with
the replay turned off before every upstream read (``RawHead.replay = 0``: llhttp parses every
response). What the client receives, whether its connection closes, what ``on_log`` sees of
the response, whether the upstream connection is still pooled and in which state, and which
path served each request must be equal for every sequence: repeated heads (replayed),
heads that change, bodies split over reads or followed by stray bytes, HEAD, 204/304,
Content-Length 0, ``Connection: close`` either side, HTTP/1.0 either side.

The client head kept for a repeated upstream head (``RawHead.sent``, see
``FastExchange._plain_head``) is compared the same way: a third run keeps it (the replay
off), the reference run drops it before every read (``RawHead.sent = None``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portway.config.loader import load_config_text
from portway.http.client import UpstreamConnection
from portway.http.flow import _batch_for
from portway.http.forwarded import TrustedProxies
from portway.http.server import ServerConnection
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig
from portway.pipeline.registry import registry
from portway.proxy.handler import ProxyApp
from portway.runtime.gateway import Gateway

#: response fields as ``on_log`` saw them, per request of the current run
LOGGED: list[Any] = []


class ReplayLogger(Plugin[PluginConfig]):
    """Reads the relayed response (status, reason, fields) in ``on_log``."""

    name = "t_replay_logger"
    Config = PluginConfig

    def on_log(self, ctx: RequestContext) -> None:
        r = ctx.response
        if r is None:
            LOGGED.append(None)
            return
        # (request ids are random: masked)
        fields = [(k, b"*" if k == b"x-request-id" else v) for k, v in r.headers.raw()]
        LOGGED.append((r.status, r.reason, fields, ctx.bytes_out))


registry.register(ReplayLogger)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 4000), "sockname": ("127.0.0.1", 80)}.get(name)

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD = b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n"
GET_CLOSE = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
GET_10 = b"GET /x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
REQUESTS = [GET, HEAD, GET_CLOSE, GET_10]

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 02 Dec 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 16\r\nConnection: keep-alive\r\n\r\n"
    + b"0123456789abcdef"
)
HEADS = [
    NGINX,
    NGINX.replace(b"12:00:00", b"12:00:01"),
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 Fine\r\ncontent-length: 4\r\nconnection: Keep-Alive\r\n\r\n\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nServer: up\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length:  007 \r\n\r\n1234567",
    b"HTTP/1.1 200 OK\r\nVia: 1.1 other\r\nContent-Length: 2\r\n\r\nok",
    # heads only the field-by-field parse takes (``Reparse``)
    b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: Keep-Alive\r\n"
    b"Content-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
]

CONFIG = """
listeners: [{name: public, address: '127.0.0.1:0'}]
admin: {enabled: false}
upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}
routes:
  - {name: r, match: {paths: ['/x']}, upstream: u}
"""

#: request ids (random): in an error the gateway answers itself, in request_id's field
_RID = re.compile(rb'"request_id":"[^"]*"|(?i:x-request-id): [^\r]*')

#: an exchange: the client's request and the upstream's response as the reads it arrives in
Exchange = tuple[bytes, list[bytes]]


async def _run(
    exchanges: list[Exchange],
    replay: bool,
    log: bool,
    plugins: str = "",
    kept: bool = True,
    alts: list[bytes | None] | None = None,
) -> list[Any]:
    """What the gateway does with ``exchanges`` on one client connection and one pooled
    upstream connection; stops after the exchange that takes the upstream connection out of
    the pool (the next one would connect for real). ``kept``: the client head kept for a
    repeated upstream head may be used; ``alts``: the listener's Alt-Svc per exchange."""
    names = ([plugins] if plugins else []) + (["{name: t_replay_logger}"] if log else [])
    text = CONFIG + (f"plugins: [{', '.join(names)}]\n" if names else "")
    cfg = load_config_text(text, "replay.yaml")
    gw = Gateway(cfg, observers=[])
    await gw.start()
    loop = asyncio.get_running_loop()
    app = ProxyApp(gw.graph_ref)
    conn = ServerConnection(app, cfg.server.limits, TrustedProxies([]), "http", loop)
    ct = _Transport()
    conn.connection_made(ct)
    target = gw.graph.upstreams["u"].targets[0]
    up = UpstreamConnection(loop)
    ut = _Transport()
    up.connection_made(ut)
    target.pool.release(up)
    batch = _batch_for(loop)
    LOGGED.clear()
    seen: list[Any] = []
    try:
        for i, (request, reads) in enumerate(exchanges):
            ct.out.clear()
            ut.out.clear()
            if alts is not None:
                conn.alt_svc = alts[i % len(alts)]
            conn.data_received(request)
            batch.flush()
            for _ in range(20):  # (a fallback's task writes the request on its next turns)
                if ut.out:
                    break
                await asyncio.sleep(0)
            for data in reads:
                if not replay:
                    up._head.replay = 0
                if not kept:
                    up._head.sent = None
                up.data_received(data)
                batch.flush()
                # the remembered runs are shared, never edited (the Via line is the sink's)
                assert b"via: 1.1 portway" not in b"".join(up._head.last_fields)
            for _ in range(20):
                await asyncio.sleep(0)
                batch.flush()
            pooled = up in target.pool.idle_stack()
            seen.append(
                (
                    _RID.sub(b"", b"".join(ct.out)),
                    ct.closed,
                    up.state,
                    up.closed,
                    pooled,
                    app.fast_requests,
                    app.fast_fallbacks,
                    list(LOGGED),
                )
            )
            LOGGED.clear()
            if up.closed or ct.closed:
                break
    finally:
        conn.connection_lost(None)
        await gw.aclose()
    return seen


def _both(
    exchanges: list[Exchange],
    log: bool = True,
    plugins: str = "",
    alts: list[bytes | None] | None = None,
) -> list[Any]:
    loop = asyncio.new_event_loop()
    try:
        on = loop.run_until_complete(_run(exchanges, True, log, plugins, True, alts))
        off = loop.run_until_complete(_run(exchanges, False, log, plugins, False, alts))
        parsed = loop.run_until_complete(_run(exchanges, False, log, plugins, True, alts))
    finally:
        loop.close()
    assert on == off
    assert parsed == off
    return on


def _whole(request: bytes, response: bytes) -> Exchange:
    return (request, [response])


@pytest.mark.parametrize("log", [True, False])
@pytest.mark.parametrize(
    "exchanges",
    [
        # the same head three times: replayed from the second on
        [_whole(GET, NGINX)] * 3,
        # a head that changes (Date) and comes back
        [
            _whole(GET, HEADS[0]),
            _whole(GET, HEADS[1]),
            _whole(GET, HEADS[1]),
            _whole(GET, HEADS[0]),
        ],
        # the same response split over reads, then whole
        [_whole(GET, NGINX), (GET, [NGINX[:-5], NGINX[-5:]]), _whole(GET, NGINX)],
        [_whole(GET, NGINX), (GET, [NGINX[:40], NGINX[40:]]), _whole(GET, NGINX)],
        # stray bytes after the remembered head's body, or a body short of them
        [_whole(GET, NGINX), _whole(GET, NGINX + b"H")],
        [_whole(GET, NGINX), _whole(GET, NGINX + NGINX)],
        [_whole(GET, NGINX), (GET, [NGINX[:-1]])],
        # HEAD after GET with the same head (no body read), and GET after HEAD
        [
            _whole(GET, NGINX),
            _whole(HEAD, NGINX[: NGINX.index(b"\r\n\r\n") + 4]),
            _whole(GET, NGINX),
        ],
        # the client's Connection: close, HTTP/1.0 keep-alive
        [_whole(GET, NGINX), _whole(GET_10, NGINX), _whole(GET_CLOSE, NGINX)],
        *([_whole(GET, h)] * 3 for h in HEADS[2:]),
    ],
)
def test_replayed_responses_are_relayed_as_parsed_ones(
    exchanges: list[Exchange], log: bool
) -> None:
    seen = _both(exchanges, log)
    assert seen and seen[0][0].startswith(b"HTTP/1.1 ")


def test_the_nginx_head_is_replayed_and_relayed_whole() -> None:
    """(The case the replay is for.) The second and third responses skip llhttp and still
    reach the client as the first did: Connection dropped, Via added, body as sent."""
    seen = _both([_whole(GET, NGINX)] * 3)
    assert len(seen) == 3
    first = seen[0][0]
    assert first == seen[1][0] == seen[2][0]
    assert b"onnection" not in first and b"\r\nvia: 1.1 portway\r\n" in first
    assert first.endswith(b"\r\n\r\n0123456789abcdef")
    assert seen[2][5] == 3  # all three task-free


@pytest.mark.parametrize("response", HEADS[-3:])
def test_a_head_in_two_reads_that_needs_the_field_by_field_parse(response: bytes) -> None:
    """(Found by the test below.) Such a head was parsed again from its last read only and
    refused as invalid (a 502): the pieces read before are kept for the second parse."""
    for cut in (1, 10, response.index(b"\r\n\r\n") + 1):
        seen = _both([(GET, [response[:cut], response[cut:]]), _whole(GET, response)])
        assert len(seen) == 2
        for s in seen:
            assert s[0].startswith(b"HTTP/1.1 200 OK\r\n") and s[0].endswith(
                b"ok" if b"chunked" not in s[0] else b"0\r\n\r\n"
            )


#: response hooks: a field hook that keeps the lite head and watches a name the upstream
#: may send (request_id), and a parsed-fields hook that takes the full parser (headers)
HOOKS = [
    "{name: request_id}",
    "{name: headers, config: {response: {set: {x-b: '2'}, remove: [server]}}}",
]


@pytest.mark.parametrize("plugins", HOOKS)
def test_replay_under_response_hooks(plugins: str) -> None:
    echo = NGINX.replace(b"Server: nginx", b"X-Request-ID: up")
    for response in (NGINX, echo):
        seen = _both([_whole(GET, response)] * 3 + [_whole(GET, NGINX)], True, plugins)
        assert len(seen) == 4
        assert seen[1][0] == seen[2][0]


_PIECES = st.sampled_from(HEADS)


@st.composite
def _sequences(draw: st.DrawFn) -> list[Exchange]:
    out: list[Exchange] = []
    for _ in range(draw(st.integers(1, 6))):
        request = draw(st.sampled_from(REQUESTS))
        response = draw(_PIECES)
        if request is HEAD:
            response = response[: response.index(b"\r\n\r\n") + 4]
        kind = draw(st.integers(0, 3))
        if kind == 1 and len(response) > 1:
            cut = draw(st.integers(1, len(response) - 1))
            out.append((request, [response[:cut], response[cut:]]))
        elif kind == 2:
            out.append((request, [response + draw(st.sampled_from([b"x", b"HTTP/1.1 2"]))]))
        else:
            out.append((request, [response]))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sequences())
def test_any_sequence_is_relayed_alike(exchanges: list[Exchange]) -> None:
    _both(exchanges)


def test_the_kept_client_head_follows_alt_svc_and_the_request() -> None:
    """The kept head is sent again only for the same Alt-Svc (object), keep-alive, HTTP/1.0
    and HEAD facts; any change builds the head again (compared with never keeping it)."""
    alt = b'h3=":443"; ma=86400'
    seq = [_whole(GET, NGINX)] * 3 + [_whole(GET_10, NGINX)] * 2 + [_whole(GET, NGINX)] * 2
    seq += [_whole(HEAD, NGINX[: NGINX.index(b"\r\n\r\n") + 4]), _whole(GET, NGINX)]
    seq += [_whole(GET_CLOSE, NGINX)]
    seen = _both(seq, alts=[None, None, alt, alt, None, alt, bytes(alt)])
    assert len(seen) == len(seq)
    assert b"alt-svc: " + alt in seen[2][0] and b"alt-svc" not in seen[1][0]
    assert seen[-1][1]  # closed after Connection: close


@pytest.mark.parametrize("plugins", ["{name: headers, config: {request: {set: {x-a: '1'}}}}", ""])
def test_kept_heads_with_the_other_plugins(plugins: str) -> None:
    seen = _both([_whole(GET, NGINX)] * 3 + [_whole(GET, HEADS[1])] * 2, True, plugins)
    assert len(seen) == 5
