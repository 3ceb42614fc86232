"""Script batching: concurrent EVALSHA calls share round trips and stay exact."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from portway.plugins._ratelimit.limiter import LimitSpec, RedisLimiter
from portway.plugins._ratelimit.local import Decision
from portway.state.base import LuaScript, StoreUnavailableError
from portway.state.redis import RedisStore


async def _reads(url: str) -> int:
    """Read events the server has processed so far (one per round trip that reaches it)."""
    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("stats")
        return int(info["total_reads_processed"])
    finally:
        await client.aclose()


async def _evals(url: str) -> dict[str, int]:
    """EVALSHA and EVAL commands the server has run so far."""
    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("commandstats")
    finally:
        await client.aclose()
    return {n: int(info.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in ("evalsha", "eval")}


def _fields(d: Decision) -> tuple[object, ...]:
    return (d.allowed, list(d.remaining), list(d.reset), d.retry_after)


@pytest.mark.parametrize(
    ("algorithm", "limits"),
    [
        ("gcra", [LimitSpec("s", 5, 1, 3)]),  # the straight-line script
        ("token_bucket", [LimitSpec("s", 5, 1, 4), LimitSpec("m", 50, 60, 7)]),
        ("sliding_window", [LimitSpec("s", 6, 1, 6)]),
    ],
)
async def test_one_flush_is_one_evalsha_with_the_sequential_results(
    private_redis, algorithm, limits
):
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    seq = RedisLimiter(store, algorithm, limits, key_prefix="seq:")
    bat = RedisLimiter(store, algorithm, limits, key_prefix="bat:")
    # several keys interleaved, costs of 1 and 2, a fake clock that moves within the batch
    calls = [(f"k{i % 3}", 1 + (i % 5 == 0), 1e12 + 37_000 * i) for i in range(60)]
    try:
        await bat.decide("warm-up", 1)  # connected; the batch script not yet cached
        await bat.decide("warm-up", 1)
        want = [await seq.decide(k, c, now_us=t) for k, c, t in calls]  # one by one
        assert sum(d.allowed for d in want) not in (0, len(calls))  # both outcomes occur
        before = await _evals(private_redis.url)
        trips = store.batcher.round_trips
        got = await asyncio.gather(*(bat.decide(k, c, now_us=t) for k, c, t in calls))
        after = await _evals(private_redis.url)
        assert store.batcher.round_trips == trips + 1
        # one batch call (its first use: EVAL, which caches it), the same decisions in order
        assert after["evalsha"] - before["evalsha"] + after["eval"] - before["eval"] == 1
        assert [_fields(d) for d in got] == [_fields(d) for d in want]
        # cached now: the next flush is one EVALSHA
        before = await _evals(private_redis.url)
        await asyncio.gather(*(bat.decide(k, c, now_us=t + 1e9) for k, c, t in calls))
        after = await _evals(private_redis.url)
        assert (after["evalsha"] - before["evalsha"], after["eval"] - before["eval"]) == (1, 0)
    finally:
        await store.aclose()


async def test_a_call_that_raises_in_a_batch_answers_only_itself(private_redis):
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    # INCR on a key holding a hash raises inside the script (WRONGTYPE); nil replies stay nil
    script = LuaScript("if ARGV[1] == 'nil' then return nil end return redis.call('INCR', KEYS[1])")
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        await admin.hset("h", "f", "v")
        results = await asyncio.gather(
            store.eval_script(script, ["a"], ["x"]),
            store.eval_script(script, ["h"], ["x"]),
            store.eval_script(script, ["a"], ["nil"]),
            store.eval_script(script, ["a"], ["x"]),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] is None and results[3] == 2
        assert isinstance(results[1], StoreUnavailableError)
        assert "WRONGTYPE" in str(results[1])
    finally:
        await admin.aclose()
        await store.aclose()


async def test_concurrent_decisions_share_round_trips_and_stay_exact(private_redis):
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    limiter = RedisLimiter(store, "gcra", [LimitSpec("l", 20, 3600, 20)], key_prefix="t:")
    try:
        # connect and cache the script first: the batch below is about requests, not set-up
        await limiter.decide("warm-up", 1)
        n = 64
        before_reads = await _reads(private_redis.url)
        before_trips = store.batcher.round_trips
        decisions = await asyncio.gather(*(limiter.decide("k", 1) for _ in range(n)))
        reads = await _reads(private_redis.url) - before_reads
        trips = store.batcher.round_trips - before_trips
        # exactness: the burst of 20 is admitted, not one more
        assert sum(d.allowed for d in decisions) == 20
        # every call was sent, the 64 calls of one loop pass as one pipeline
        assert store.batcher.calls >= n + 1
        assert trips == 1
        # what the server saw: a few reads (the ~15 KB pipeline, the INFO call), not 64
        assert reads < n // 4
        # ...and as ONE script call (the batch variant: state/luabatch.py), sent as EVAL on
        # its first use (the warm-up was an EVALSHA answered NOSCRIPT, then an EVAL)
        assert await _evals(private_redis.url) == {"evalsha": 1, "eval": 2}
    finally:
        await store.aclose()


async def test_calls_across_passes_queue_behind_the_one_in_flight(private_redis):
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    script = LuaScript("return redis.call('INCR', KEYS[1])")
    try:
        await store.eval_script(script, ["c"], [])  # script cached, connection open

        async def later(i: int) -> int:
            for _ in range(i % 4):
                await asyncio.sleep(0)
            return int(await store.eval_script(script, ["c"], []))

        before = store.batcher.round_trips
        got = await asyncio.gather(*(later(i) for i in range(40)))
        # each INCR ran once: replies are the values 2..41, each seen exactly once
        assert sorted(got) == list(range(2, 42))
        assert store.batcher.round_trips - before < 40
    finally:
        await store.aclose()


async def test_script_error_answers_only_its_call(private_redis):
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    good = LuaScript("return 7")
    bad = LuaScript("return redis.error_reply('boom')")
    try:
        results = await asyncio.gather(
            store.eval_script(good, [], []),
            store.eval_script(bad, [], []),
            store.eval_script(good, [], []),
            return_exceptions=True,
        )
        assert results[0] == 7 and results[2] == 7
        assert isinstance(results[1], StoreUnavailableError)
        assert "boom" in str(results[1])
        assert store.available  # a script error is not an outage
    finally:
        await store.aclose()


async def test_a_down_server_fails_the_whole_batch_fast(private_redis):
    store = RedisStore(private_redis.url, timeout=1, connect_timeout=1, backoff_min=30)
    script = LuaScript("return 1")
    try:
        assert await store.eval_script(script, [], []) == 1
        private_redis.stop()
        results = await asyncio.gather(
            *(store.eval_script(script, [], []) for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailableError) for r in results)
        assert not store.available
        # backing off: no network, immediate refusal
        with pytest.raises(StoreUnavailableError, match="backing off"):
            await store.eval_script(script, [], [])
    finally:
        await store.aclose()


async def test_cancelled_caller_does_not_break_the_batch(private_redis):
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    script = LuaScript("return ARGV[1]")
    try:
        await store.eval_script(script, [], ["warm"])
        t1 = asyncio.ensure_future(store.eval_script(script, [], ["a"]))
        t2 = asyncio.ensure_future(store.eval_script(script, [], ["b"]))
        await asyncio.sleep(0)  # both queued
        t1.cancel()
        assert await t2 == b"b"
        with pytest.raises(asyncio.CancelledError):
            await t1
    finally:
        await store.aclose()


async def test_a_key_of_the_wrong_type_fails_only_its_own_decisions(private_redis):
    # the GCRA batch script reads each key once: a key holding another type (WRONGTYPE)
    # answers each of its decisions with the error, as unbatched; the other keys' decisions
    # in the same batch are what they are one by one
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    limits = [LimitSpec("s", 5, 1, 3)]
    seq = RedisLimiter(store, "gcra", limits, key_prefix="seq:")
    bat = RedisLimiter(store, "gcra", limits, key_prefix="bat:")
    admin = aioredis.Redis.from_url(private_redis.url)
    calls = [(f"k{i % 3}", 1e12 + 1000 * i) for i in range(12)]
    try:
        await admin.hset(bat.keys_for("k1")[0], "f", "v")
        await bat.decide("warm-up", 1)
        want = [await seq.decide(k, 1, now_us=t) for k, t in calls if k != "k1"]
        got = await asyncio.gather(
            *(bat.decide(k, 1, now_us=t) for k, t in calls), return_exceptions=True
        )
        for (k, _), g in zip(calls, got, strict=True):
            if k == "k1":
                assert isinstance(g, StoreUnavailableError) and "WRONGTYPE" in str(g)
        ok = [g for (k, _), g in zip(calls, got, strict=True) if k != "k1"]
        assert [_fields(d) for d in ok] == [_fields(d) for d in want]  # type: ignore[arg-type]
        assert store.available  # a key's error is not an outage
    finally:
        await admin.aclose()
        await store.aclose()


async def test_full_batches_of_distinct_keys_and_long_calls(private_redis):
    # more calls than one batch holds (256), each of its own key: two batch calls whose
    # key and argument indices reach 255, the same decisions as one by one
    store = RedisStore(private_redis.url, timeout=5, connect_timeout=5)
    limits = [LimitSpec("s", 5, 1, 2)]
    seq = RedisLimiter(store, "gcra", limits, key_prefix="seq:")
    bat = RedisLimiter(store, "gcra", limits, key_prefix="bat:")
    calls = [(f"k{i % 290}", 1 + (i % 7 == 0), 1e12 + 10 * i) for i in range(300)]
    # a call with more arguments than one byte counts is sent on its own, in order
    echo = LuaScript("return #ARGV")
    try:
        await bat.decide("warm-up", 1)
        want = [await seq.decide(k, c, now_us=t) for k, c, t in calls]
        got = await asyncio.gather(*(bat.decide(k, c, now_us=t) for k, c, t in calls))
        assert [_fields(d) for d in got] == [_fields(d) for d in want]
        counts = await asyncio.gather(
            store.eval_script(echo, ["a"], ["x"] * 3),
            store.eval_script(echo, ["a"], ["x"] * 300),
            store.eval_script(echo, ["a"], ["x"] * 255),
        )
        assert counts == [3, 300, 255]
    finally:
        await store.aclose()
