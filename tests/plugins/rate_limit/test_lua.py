"""The Redis Lua script against the real Redis: same decisions as the Python model."""

from __future__ import annotations

import asyncio
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portway.plugins._ratelimit.algorithms import ALGORITHMS, USES_BURST, State
from portway.plugins._ratelimit.limiter import LimitSpec, RedisLimiter, hash_tag
from portway.state.redis import RedisStore

BASE_US = 1_700_000_000_000_000.0  # a realistic epoch in microseconds: precision matters


def slot(key: str) -> int:
    # Redis Cluster's key slot: CRC16/XMODEM of the hash tag (or the whole key), mod 16384
    s, e = key.find("{"), -1
    if s >= 0:
        e = key.find("}", s + 1)
    if s >= 0 and e > s + 1:
        key = key[s + 1 : e]
    crc = 0
    for b in key.encode():
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384


@pytest.fixture
async def store(redis_url):
    # timeouts no loaded machine reaches (the default 250 ms was seen to run out)
    s = RedisStore(redis_url, timeout=10, connect_timeout=10)
    yield s
    await s.aclose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    algo=st.sampled_from(sorted(ALGORITHMS)),
    rate=st.integers(1, 20),
    per_ms=st.sampled_from([100, 1000, 3000]),
    burst=st.integers(1, 20),
    evs=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 3)), min_size=1, max_size=30),
)
def test_lua_matches_python_model(redis_url, algo, rate, per_ms, burst, evs):
    async def go() -> None:
        store = RedisStore(redis_url, timeout=10, connect_timeout=10)
        prefix = f"test:lua:{zlib.crc32(repr((algo, rate, per_ms, burst, evs)).encode())}:"
        cap = burst if algo in USES_BURST else rate
        lim = RedisLimiter(
            store, algo, [LimitSpec("a", rate, per_ms / 1000, cap)], key_prefix=prefix
        )
        await store.delete(*lim.keys_for("k"))
        state: State | None = None
        now_us = BASE_US
        try:
            for gap, cost in evs:
                now_us += gap * 1000
                ok, new, rem, reset, retry, _ = ALGORITHMS[algo](
                    state, rate, per_ms * 1000, cap, now_us, cost
                )
                if ok:
                    state = new
                d = await lim.decide("k", cost, now_us=now_us)
                assert d.allowed == ok, (gap, cost)
                assert d.remaining[0] == rem
                assert abs(d.reset[0] - reset / 1e6) <= 0.0011
                if not ok and retry != float("inf"):
                    assert abs(d.retry_after - retry / 1e6) <= 0.0011
        finally:
            await store.delete(*lim.keys_for("k"))
            await store.aclose()

    asyncio.run(go())


async def test_multi_limit_all_or_nothing(store, redis_prefix):
    lim = RedisLimiter(
        store,
        "gcra",
        [LimitSpec("fast", 10, 1, 5), LimitSpec("slow", 3, 3600, 3)],
        key_prefix=redis_prefix,
    )
    results = [await lim.decide("alice", 1) for _ in range(5)]
    assert [d.allowed for d in results] == [True, True, True, False, False]
    # the rejected requests consumed nothing from the fast limit
    assert results[-1].remaining[0] == 2
    assert results[-1].retry_after > 1000
    # a rejection by the fast limit does not consume the slow one either
    lim2 = RedisLimiter(
        store,
        "fixed_window",
        [LimitSpec("a", 2, 3600, 2), LimitSpec("b", 100, 3600, 100)],
        key_prefix=redis_prefix + "fw:",
    )
    ds = [await lim2.decide("bob", 1) for _ in range(4)]
    assert [d.allowed for d in ds] == [True, True, False, False]
    assert ds[-1].remaining == [0, 98]


async def test_keys_share_a_slot_and_expire(store, redis_prefix):
    lim = RedisLimiter(
        store,
        "token_bucket",
        [LimitSpec("a", 10, 1, 10), LimitSpec("b", 1000, 3600, 1000)],
        key_prefix=redis_prefix,
        scope="route-1",
    )
    keys = lim.keys_for("c:alice")
    assert keys[0] != keys[1]
    assert len({slot(k) for k in keys}) == 1
    assert "{route-1|c:alice}" in keys[0]
    await lim.decide("c:alice", 1)
    ttl_fast = await store.client.pttl(keys[0])
    ttl_slow = await store.client.pttl(keys[1])
    # idle keys vanish once their state is back to fresh (+1 s of slack)
    assert 0 < ttl_fast <= 1200
    assert 3_600 < ttl_slow <= 1_000 + 4_000
    await store.delete(*keys)


def test_hash_tag_is_safe_for_hostile_keys():
    assert hash_tag("r", "h:{evil}") != "r|h:{evil}"
    assert "{" not in hash_tag("r", "h:{evil}") and "}" not in hash_tag("r", "}")
    assert len(hash_tag("r", "x" * 10_000)) < 40
    assert hash_tag("r", "ip:1.2.3.4") == "r|ip:1.2.3.4"


async def test_clock_comes_from_redis(store, redis_prefix):
    # no now override: the script reads TIME; two decisions 1.1 s apart refill a 1/s limit
    lim = RedisLimiter(store, "gcra", [LimitSpec("a", 1, 1, 1)], key_prefix=redis_prefix)
    assert (await lim.decide("k", 1)).allowed
    d = await lim.decide("k", 1)
    assert not d.allowed and 0 < d.retry_after <= 1.0
    await asyncio.sleep(d.retry_after + 0.05)
    assert (await lim.decide("k", 1)).allowed
    await store.delete(*lim.keys_for("k"))


async def test_cost_above_capacity_never_fits(store, redis_prefix):
    lim = RedisLimiter(store, "gcra", [LimitSpec("a", 5, 1, 5)], key_prefix=redis_prefix)
    d = await lim.decide("k", 6)
    assert not d.allowed and d.retry_after == float("inf")
    assert (await lim.decide("k", 5)).allowed
    await store.delete(*lim.keys_for("k"))
