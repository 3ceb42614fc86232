"""The raw pipelined script connection (state/resp.py) against real Redis servers: batching
across gateways, exactness, set-up (AUTH, SELECT), NOSCRIPT mid-pipeline, and a Redis that
stops or stalls while calls are in flight."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

import pytest
import redis.asyncio as aioredis

from portway.plugins._ratelimit.limiter import LimitSpec, RedisLimiter
from portway.plugins._ratelimit.lua import RATE_LIMIT
from portway.state.base import LuaScript, StoreUnavailableError
from portway.state.luabatch import batch_script
from portway.state.redis import RedisStore
from portway.state.resp import ScriptPipe
from tests.helpers import run_upstream
from tests.plugins.rate_limit.test_cluster import gateways, limited, load


async def _info(url: str, section: str) -> dict[str, object]:
    client = aioredis.Redis.from_url(url)
    try:
        return dict(await client.info(section))
    finally:
        await client.aclose()


async def _evals(url: str) -> int:
    info = await _info(url, "commandstats")
    total = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        stat = info.get(name)
        if isinstance(stat, dict):
            total += int(stat["calls"])
    return total


def test_plain_urls_take_the_raw_pipe_and_others_do_not():
    assert isinstance(RedisStore("redis://127.0.0.1:1/0").batcher, ScriptPipe)
    assert isinstance(RedisStore("unix:///tmp/none.sock").batcher, ScriptPipe)
    assert RedisStore("redis://127.0.0.1:1/0").packs
    for url in ("rediss://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1"):
        store = RedisStore(url)
        assert not isinstance(store.batcher, ScriptPipe) and not store.packs
    assert not RedisStore("redis://127.0.0.1:1/0", raw_pipe=False).packs


async def test_three_gateways_batch_their_decisions_and_admit_exactly_the_burst(
    tmp_path, private_redis
):
    # a limit that does not refill during the test: exactly `burst` requests are admitted
    # however fast or slow the machine is, and every request is decided in Redis
    burst = 300
    # deny on store errors (a 503 would show) and a timeout no loaded machine reaches: the
    # local fallback must not blur the count
    redis = {"url": private_redis.url, "key_prefix": "t3:", "timeout": "10s"}
    route = limited(
        "limited", "/", redis, 1, burst, algorithm="token_bucket", on_store_error="deny"
    )
    route["plugins"][0]["config"]["limits"][0]["per"] = "1h"
    async with run_upstream() as up, gateways(tmp_path, up.url, [route]) as ports:
        # the script cached first (the batch variant is sent as EVAL once per gateway)
        admin = aioredis.Redis.from_url(private_redis.url)
        assert await admin.script_load(RATE_LIMIT.source) == RATE_LIMIT.sha
        await admin.aclose()
        evals0 = await _evals(private_redis.url)
        reads0 = int((await _info(private_redis.url, "stats"))["total_reads_processed"])
        counts = await load(ports, "/x", 3.0, per_gateway=16)
        reads = int((await _info(private_redis.url, "stats"))["total_reads_processed"]) - reads0
        evals = await _evals(private_redis.url) - evals0
    sent = counts[200] + counts[429]
    assert set(counts) <= {200, 429}, counts
    logs = [f.read_text() for f in sorted(tmp_path.glob("gw*.log"))]
    assert counts[200] == burst, (counts, logs)
    assert sent > burst  # the clients really oversubscribed the limit
    # the concurrent decisions of a loop pass were one batch script call (state/luabatch.py),
    # and shared the server's reads (one read per gateway write), not one read per call
    assert sent // 256 <= evals < sent, (evals, sent)
    assert reads < sent, (reads, sent)


async def test_auth_and_database_are_set_up_on_the_pipe(private_redis):
    admin = aioredis.Redis.from_url(private_redis.url)
    await admin.config_set("requirepass", "s3cret")
    host = f"127.0.0.1:{private_redis.port}"
    good = RedisStore(f"redis://:s3cret@{host}/2", timeout=5, connect_timeout=5)
    bad = RedisStore(f"redis://:wrong@{host}/2", timeout=5, connect_timeout=5, backoff_min=30)
    script = LuaScript("return redis.call('INCR', KEYS[1])")
    try:
        results = await asyncio.gather(*(good.eval_script(script, ["n"], []) for _ in range(5)))
        assert sorted(results) == [1, 2, 3, 4, 5]
        db2 = aioredis.Redis.from_url(f"redis://:s3cret@{host}/2")
        db0 = aioredis.Redis.from_url(f"redis://:s3cret@{host}/0")
        assert await db2.get("n") == b"5" and await db0.get("n") is None
        await db2.aclose()
        await db0.aclose()
        with pytest.raises(StoreUnavailableError):
            await bad.eval_script(script, ["n"], [])
        assert not bad.available
    finally:
        await good.aclose()
        await bad.aclose()
        auth = aioredis.Redis.from_url(f"redis://:s3cret@{host}/0")
        await auth.config_set("requirepass", "")
        await auth.aclose()
        await admin.aclose()


async def test_noscript_in_the_middle_of_a_pipeline(private_redis):
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    script = LuaScript("return redis.call('INCR', KEYS[1])")
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await store.eval_script(script, ["c"], []) == 1
        await admin.script_flush()
        # the batch call of these 32 answers NOSCRIPT and is sent again as EVAL, once
        got = await asyncio.gather(*(store.eval_script(script, ["c"], []) for _ in range(32)))
        assert sorted(got) == list(range(2, 34))
        assert await admin.script_exists(batch_script(script).sha) == [True]
        # and a call alone is EVALSHA of the script itself: NOSCRIPT, then EVAL
        assert await store.eval_script(script, ["c"], []) == 34
        assert await admin.script_exists(script.sha) == [True]
    finally:
        await admin.aclose()
        await store.aclose()


async def _hammer(
    limiter: RedisLimiter, stop: asyncio.Event, outcomes: Counter[str], key: str
) -> None:
    while not stop.is_set():
        try:
            d = await limiter.decide(key, 1)
            outcomes["allowed" if d.allowed else "denied"] += 1
        except StoreUnavailableError as e:
            outcomes["backing off" if "backing off" in str(e) else "failed"] += 1
            await asyncio.sleep(0.01)


async def test_redis_stopped_mid_run_fails_in_flight_calls_then_recovers(private_redis):
    store = RedisStore(
        private_redis.url, timeout=2, connect_timeout=2, backoff_min=0.1, backoff_max=0.2
    )
    limiter = RedisLimiter(store, "gcra", [LimitSpec("l", 1e9, 1, 1e9)], key_prefix="t:")
    stop = asyncio.Event()
    before: Counter[str] = Counter()
    workers = [asyncio.ensure_future(_hammer(limiter, stop, before, "k")) for _ in range(32)]
    try:
        while before["allowed"] < 500:
            await asyncio.sleep(0.01)
        private_redis.stop()  # with decisions in flight
        while before["failed"] == 0 or before["backing off"] == 0:
            await asyncio.sleep(0.01)
        assert not store.available
        private_redis.start()  # empty: no keys, no cached scripts (NOSCRIPT -> EVAL)
        allowed_at_restart = before["allowed"]
        while before["allowed"] < allowed_at_restart + 500:
            await asyncio.sleep(0.01)
        assert store.available
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
        await store.aclose()
    assert set(before) <= {"allowed", "failed", "backing off"}, before
    assert before["denied"] == 0


async def test_a_stalled_redis_times_out_in_flight_calls(private_redis):
    pid = int((await _info(private_redis.url, "server"))["process_id"])
    store = RedisStore(private_redis.url, timeout=0.3, connect_timeout=2, backoff_min=30)
    script = LuaScript("return 1")
    try:
        assert await store.eval_script(script, [], []) == 1
        os.kill(pid, signal.SIGSTOP)  # the server takes the calls but never answers
        try:
            calls = [store.eval_script(script, [], []) for _ in range(10)]
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert all(isinstance(r, StoreUnavailableError) for r in results), results
        assert "no reply" in str(results[0])
        assert not store.available
    finally:
        await store.aclose()


async def test_closed_store_fails_calls(private_redis):
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    script = LuaScript("return 1")
    assert await store.eval_script(script, [], []) == 1
    await store.aclose()
    with pytest.raises(StoreUnavailableError):
        await store.eval_script(script, [], [])


class _Waiter:
    """A reply waiter (``ScriptPipe.submit_to``): records what it was told, and when."""

    def __init__(self, done: asyncio.Event, log: list[object]) -> None:
        self.done = done
        self.log = log
        self.told: list[tuple[str, object]] = []

    def resolved(self, reply: object) -> None:
        self.told.append(("resolved", reply))
        self.log.append(reply)
        self.done.set()

    def failed(self, exc: StoreUnavailableError) -> None:
        self.told.append(("failed", exc))
        self.log.append(exc)
        self.done.set()


async def test_waiters_are_told_by_plain_calls_in_one_write(private_redis):
    from portway.state.resp import pack_params

    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    script = LuaScript("return redis.call('INCR', KEYS[1])")
    broken = LuaScript("return redis.call('NOSUCHCOMMAND')")
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await store.eval_script(script, ["w"], []) == 1  # connected, script cached
        await admin.script_load(broken.source)  # (no NOSCRIPT round trip below)
        pipe = store.batcher
        assert isinstance(pipe, ScriptPipe)
        n, params = pack_params(["w"], [])
        trips = pipe.round_trips
        log: list[object] = []
        events = [asyncio.Event() for _ in range(9)]
        waiters = [_Waiter(e, log) for e in events]
        for i, w in enumerate(waiters):
            # a script error in the middle answers its own call only
            store.eval_packed_to(broken if i == 4 else script, n, params, w)
        assert all(not w.told for w in waiters)  # never told from inside the call
        async with asyncio.timeout(30):
            for e in events:
                await e.wait()
        assert pipe.round_trips == trips + 1  # the whole pass in one write
        assert [w.told[0][0] for w in waiters] == ["resolved"] * 4 + ["failed"] + ["resolved"] * 4
        assert [r for r in log if isinstance(r, int)] == list(range(2, 10))  # in order
        assert all(len(w.told) == 1 for w in waiters)
        # NOSCRIPT: sent again as EVAL, the waiter told once
        await admin.script_flush()
        again = _Waiter(asyncio.Event(), [])
        store.eval_packed_to(script, n, params, again)
        async with asyncio.timeout(30):
            await again.done.wait()
        assert again.told == [("resolved", 10)]
    finally:
        await admin.aclose()
        await store.aclose()
    # a closed store refuses at once
    with pytest.raises(StoreUnavailableError):
        store.eval_packed_to(script, n, params, _Waiter(asyncio.Event(), []))


async def test_waiters_are_failed_when_the_server_is_gone():
    from portway.state.resp import pack_params
    from tests.helpers import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=5, connect_timeout=5)
    script = LuaScript("return 1")
    n, params = pack_params([], [])
    try:
        done = asyncio.Event()
        w = _Waiter(done, [])
        store.eval_packed_to(script, n, params, w)
        async with asyncio.timeout(30):
            await done.wait()
        assert [k for k, _ in w.told] == ["failed"]
        # backing off: refused at once, nobody told
        with pytest.raises(StoreUnavailableError, match="backing off"):
            store.eval_packed_to(script, n, params, _Waiter(asyncio.Event(), []))
    finally:
        await store.aclose()


def test_our_resp_reader_reads_what_hiredis_reads():
    """The fallback reader (no hiredis installed) against hiredis on the same bytes, fed
    whole and one byte at a time."""
    import hiredis

    from portway.state.resp import RespProtocolError, RespReader, RespReplyError

    wire = (
        b"*4\r\n:1\r\n:-7\r\n:1000\r\n:0\r\n"  # a rate-limit reply
        b"+OK\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
        b"-NOSCRIPT No matching script.\r\n"
        b"*3\r\n$4\r\na\r\nb\r\n*1\r\n:5\r\n-ERR inner\r\n"  # binary-safe bulk, nesting
    )

    def read_all(reader: object, chunks: list[bytes]) -> list[object]:
        out: list[object] = []
        for c in chunks:
            reader.feed(c)  # type: ignore[attr-defined]
            while (v := reader.gets()) is not False:  # type: ignore[attr-defined]
                out.append(v)
        return out

    def norm(vs: list[object]) -> list[object]:
        return [
            ("error", str(v)) if isinstance(v, Exception) else norm(v) if isinstance(v, list) else v
            for v in vs
        ]

    expected = norm(read_all(hiredis.Reader(), [wire]))
    assert len(expected) == 9
    assert norm(read_all(RespReader(), [wire])) == expected
    assert norm(read_all(RespReader(), [wire[i : i + 1] for i in range(len(wire))])) == expected
    errs = [v for v in read_all(RespReader(), [wire]) if isinstance(v, Exception)]
    assert errs and all(isinstance(e, RespReplyError) for e in errs)
    bad = RespReader()
    bad.feed(b"?what\r\n")
    with pytest.raises(RespProtocolError):
        bad.gets()


async def test_the_pipe_without_hiredis(private_redis, monkeypatch):
    from portway.state import resp

    monkeypatch.setattr(resp, "hiredis", None)
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    script = LuaScript("return {1, redis.call('INCR', KEYS[1]), 'x'}")
    broken = LuaScript("return redis.call('NOSUCHCOMMAND')")
    try:
        got = await asyncio.gather(*(store.eval_script(script, ["nh"], []) for _ in range(20)))
        assert sorted(g[1] for g in got) == list(range(1, 21))
        assert all(g[0] == 1 and g[2] == b"x" for g in got)
        with pytest.raises(StoreUnavailableError, match=r"NOSUCHCOMMAND|Unknown"):
            await store.eval_script(broken, [], [])
        assert isinstance(store.batcher._reader, resp.RespReader)  # type: ignore[union-attr]
    finally:
        await store.aclose()
