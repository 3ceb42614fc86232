"""``rate_limit`` on the Redis store, on both serving paths: on the task-free path the
request is parked on the decision's future and carries on from its callback
(``proxy/fast.py`` ``Parked``); pipelined order, the store-error policy, a silent Redis
and a client that leaves while parked."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from tests.helpers import (
    ServingPath,
    free_port,
    http_get,
    raw_request,
    run_gateway,
    run_upstream,
    simple_config,
)


def limited(up_url: str, redis: dict[str, Any], rate: int = 2, **extra: Any) -> dict[str, Any]:
    return simple_config(
        up_url,
        plugins=[
            {
                "name": "rate_limit",
                "config": {
                    "limits": [{"rate": rate, "per": "1h"}],
                    "key": ["ip"],
                    "store": "redis",
                    "redis": redis,
                    **extra,
                },
            }
        ],
    )


async def test_redis_rate_limit_through_gateway(
    path: ServingPath, redis_url: str, redis_prefix: str
) -> None:
    async with run_upstream() as up:
        cfg = limited(up.url, {"url": redis_url, "key_prefix": redis_prefix})
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            warmed = len(up.requests)
            for left in (1, 0):
                status, h, _ = await http_get(gw.url + "/a")
                assert status == 200
                assert h.get("ratelimit-policy") == '"default";q=2;w=3600'
                assert h.get("ratelimit", "").startswith(f'"default";r={left};t=')
                assert h.get("x-ratelimit-remaining") == str(left)
            status, h, body = await http_get(gw.url + "/a")
            assert status == 429
            assert orjson.loads(body)["code"] == "rate_limited"
            assert int(h.get("retry-after", "0")) == 1800
            assert len(up.requests) == warmed + 2
            # warm: the allowed requests carried on task-free from the decision's callback;
            # the refusal is the hook's own answer (the task writes it)
            path.assert_served(3, local=1)


async def test_pipelined_requests_keep_their_order(redis_url: str, redis_prefix: str) -> None:
    path = ServingPath("warm")
    async with run_upstream() as up:
        cfg = limited(up.url, {"url": redis_url, "key_prefix": redis_prefix}, rate=3)
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            reqs = b"".join(
                b"GET /p%d HTTP/1.1\r\nHost: x\r\n%s\r\n"
                % (i, b"Connection: close\r\n" if i == 4 else b"")
                for i in range(5)
            )
            out = await raw_request(gw.port, reqs, timeout=10)
    heads = [part for part in out.split(b"HTTP/1.1 ")[1:]]
    assert [h[:3] for h in heads] == [b"200", b"200", b"200", b"429", b"429"], out
    for i in range(3):
        assert b'"path":"/p%d"' % i in heads[i], heads[i]
    path.assert_served(5, local=2)


async def test_store_down_allow_and_deny_on_both_paths(path: ServingPath) -> None:
    dead = {"url": f"redis://127.0.0.1:{free_port()}/0", "timeout": "200ms"}
    async with run_upstream() as up:
        cfg = limited(up.url, dead, rate=1000)
        cfg["routes"].append(
            {
                "name": "d",
                "match": {"paths": ["/deny"]},
                "upstream": "u",
                "plugins": [
                    {
                        "name": "rate_limit",
                        "config": {
                            "limits": [{"rate": 1000, "per": "1h"}],
                            "key": ["ip"],
                            "store": "redis",
                            "redis": dead,
                            "on_store_error": "deny",
                        },
                    }
                ],
            }
        )
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            # allow: decided by the local limiter, the request goes on
            status, _, _ = await http_get(gw.url + "/a")
            assert status == 200
            status, h, _ = await http_get(gw.url + "/deny")
            assert status == 503
            assert h.get("retry-after") == "1"
            path.assert_served(1)


class SilentRedis:
    """A TCP server that reads RESP commands and answers each EVALSHA with an admitting
    rate-limit reply only when told (``release``): a Redis that is slow on demand."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen = asyncio.Event()
        self.calls = 0
        self._go = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    def release(self) -> None:
        self._go.set()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._writers.append(w)
        buf = b""
        while True:
            data = await r.read(65536)
            if not data:
                return
            buf += data
            n = buf.count(b"EVALSHA")
            if n:
                buf = buf[buf.rfind(b"EVALSHA") + 7 :]
                self.calls += n
                self.seen.set()
                await self._go.wait()
                w.write(b"*4\r\n:1\r\n:1\r\n:1000\r\n:0\r\n" * n)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SilentRedis]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            self._go.set()
            for w in self._writers:
                w.close()
            server.close()


async def _wait(cond: Any) -> None:
    async with asyncio.timeout(10):
        while not cond():
            await asyncio.sleep(0.01)


async def test_client_leaves_while_parked() -> None:
    path = ServingPath("warm")
    async with SilentRedis().running() as redis, run_upstream() as up:
        cfg = limited(up.url, {"url": f"redis://127.0.0.1:{redis.port}/0", "timeout": "30s"})
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            warmed = len(up.requests)
            app = path._app(gw)
            _r, w = await asyncio.open_connection("127.0.0.1", gw.port)
            w.write(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(10):
                await redis.seen.wait()  # parked on the decision
            # a reset, not a half-close (a half-closed client still gets its answer)
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.close()
            await _wait(lambda: app.connections == 0)
            redis.release()
            # the decision arrives after the client left: nothing is forwarded, and the
            # connection and gateway carry on
            status, _, _ = await http_get(gw.url + "/next")
            assert status == 200
            assert [q.path for q in up.requests[warmed:]] == ["/next"]
            got = path.served()
            assert got["fast"] == 2 and got["started"] == 1, got


async def test_silent_redis_times_out_to_the_store_error_policy() -> None:
    path = ServingPath("warm")
    async with SilentRedis().running() as redis, run_upstream() as up:
        cfg = limited(up.url, {"url": f"redis://127.0.0.1:{redis.port}/0", "timeout": "100ms"})
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            # no reply within the store's timeout: on_store_error allow decides locally
            status, _, _ = await http_get(gw.url + "/slow")
            assert status == 200
            assert redis.calls >= 1
            path.assert_served(1)


async def test_half_closed_client_still_gets_its_answer_after_parking() -> None:
    path = ServingPath("warm")
    async with SilentRedis().running() as redis, run_upstream() as up:
        cfg = limited(up.url, {"url": f"redis://127.0.0.1:{redis.port}/0", "timeout": "30s"})
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            r, w = await asyncio.open_connection("127.0.0.1", gw.port)
            w.write(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(10):
                await redis.seen.wait()  # parked on the decision
            w.write_eof()
            redis.release()
            async with asyncio.timeout(10):
                out = await r.read()  # the answer, then the gateway closes
            w.close()
            assert out.startswith(b"HTTP/1.1 200 "), out[:200]
            assert b'"path":"/half"' in out
            path.assert_served(1)


def test_the_compiled_call_is_the_limiters_call() -> None:
    """What the plain-callback path sends for a key (``redis_hooks.Packing``) is byte for
    byte the limiter's own call: same keys (hash tags, hashed long or braced keys), same
    arguments; a cost without a prerendered form too."""
    from portway.plugins._ratelimit.limiter import LimitSpec, RedisLimiter
    from portway.state.redis import RedisStore
    from portway.state.resp import pack_params

    store = RedisStore("redis://127.0.0.1:1/0")
    for limits in (
        [LimitSpec("a", 10, 1, 10)],
        [LimitSpec("a", 10, 1, 20), LimitSpec("b", 1000, 3600, 1000)],
    ):
        lim = RedisLimiter(store, "gcra", limits, key_prefix="p:", scope="route")
        packing = lim.packing()
        assert packing is not None and packing.script is lim.script
        for key in ("10.0.0.1", "x{y}", "k" * 300, ""):
            for cost in (1, 3, 12):
                n, expected = pack_params(
                    lim.keys_for(key), [b"gcra", str(cost).encode(), b"", *lim._args]
                )
                assert packing.nparams == n
                assert packing.params(key, cost) == expected, (key, cost)
    assert RedisLimiter(RedisStore("rediss://127.0.0.1:1/0"), "gcra", limits).packing() is None


@pytest.mark.parametrize("packed", [True, False])
async def test_the_general_path_awaits_the_same_decision(
    packed: bool, redis_url: str, redis_prefix: str, monkeypatch: Any
) -> None:
    """With the task-free path off (as for HTTP/2, tracing, debug requests) ``on_request``
    runs in the connection's task: it awaits the compiled decision's ``Pending``
    (``pending.wait``) — or, for a store without packed calls (TLS, Cluster, Sentinel:
    ``RedisLimiter.packing`` None), the decision coroutine — with the same answers."""
    from portway.plugins._ratelimit.limiter import RedisLimiter

    if not packed:
        monkeypatch.setattr(RedisLimiter, "packing", lambda self: None)
    async with run_upstream() as up:
        cfg = limited(up.url, {"url": redis_url, "key_prefix": redis_prefix})
        async with run_gateway(cfg) as gw:
            app = ServingPath._app(gw)
            app.fast = False
            for left in (1, 0):
                status, h, _ = await http_get(gw.url + "/a")
                assert status == 200
                assert h.get("x-ratelimit-remaining") == str(left)
            status, h, _ = await http_get(gw.url + "/a")
            assert status == 429
            assert int(h.get("retry-after", "0")) == 1800
            assert app.fast_requests == 0


@pytest.fixture
def _nghttp2(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP/2 streams take the task-free path on the libnghttp2 engine only."""
    from portway.http import ng2lib
    from tests.helpers import skip_without_nghttp2

    if ng2lib.load() is None:
        skip_without_nghttp2()
    monkeypatch.setenv("PORTWAY_H2_ENGINE", "nghttp2")


@pytest.mark.usefixtures("_nghttp2")
async def test_redis_rate_limit_over_http2_on_both_paths(
    path: ServingPath, redis_url: str, redis_prefix: str
) -> None:
    """An HTTP/2 stream parks on the Redis decision as an HTTP/1.1 request does (warm: it
    carries on task-free from the decision's callback); the same fields and refusal."""
    from tests.http.test_h2 import H2Client

    async with run_upstream() as up:
        cfg = limited(up.url, {"url": redis_url, "key_prefix": redis_prefix})
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            warmed = len(up.requests)
            c = await H2Client.open(gw.port)
            try:
                for left in (1, 0, None):
                    sid = c.request("GET", "/a")
                    await c.flush()
                    await c.wait(sid)
                    r = c.responses[sid]
                    fields = {k.decode(): v.decode() for k, v in r["headers"]}
                    if left is None:
                        assert fields[":status"] == "429"
                        assert orjson.loads(bytes(r["body"]))["code"] == "rate_limited"
                        assert fields["retry-after"] == "1800"
                    else:
                        assert fields[":status"] == "200"
                        assert fields["ratelimit"].startswith(f'"default";r={left};t=')
                        assert fields["x-ratelimit-remaining"] == str(left)
            finally:
                c.close()
            assert len(up.requests) == warmed + 2
            path.assert_served(3, local=1)


@pytest.mark.usefixtures("_nghttp2")
async def test_http2_stream_reset_while_parked() -> None:
    """The client resets its stream while the request waits on Redis: nothing is forwarded
    when the decision arrives, and the connection serves its next stream."""
    from tests.http.test_h2 import H2Client

    path = ServingPath("warm")
    async with SilentRedis().running() as redis, run_upstream() as up:
        cfg = limited(up.url, {"url": f"redis://127.0.0.1:{redis.port}/0", "timeout": "30s"})
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            warmed = len(up.requests)
            c = await H2Client.open(gw.port)
            try:
                sid = c.request("GET", "/gone")
                await c.flush()
                async with asyncio.timeout(10):
                    await redis.seen.wait()  # parked on the decision
                c.conn.reset_stream(sid)
                await c.flush()
                got: dict[str, int] = {}

                def ended() -> bool:
                    got.update(path.served())
                    return got.get("fast", 0) >= 1

                await _wait(ended)  # the parked request ended when its stream was reset
                redis.release()
                nxt = c.request("GET", "/next")
                await c.flush()
                await c.wait(nxt)
                assert dict(c.responses[nxt]["headers"])[b":status"] == b"200"
            finally:
                c.close()
            assert [q.path for q in up.requests[warmed:]] == ["/next"]
