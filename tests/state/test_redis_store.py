from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from portway.state.base import LuaScript, ScriptingStore, StoreUnavailableError
from portway.state.redis import Backoff, RedisStore


@pytest.fixture
async def store(redis_url):
    s = RedisStore(redis_url)
    yield s
    await s.aclose()


async def test_kv_and_incr(store, redis_prefix):
    k = redis_prefix + "a"
    await store.set(k, b"hello", ttl=5)
    assert await store.get(k) == b"hello"
    assert 0 < await store.client.pttl(k) <= 5000
    assert await store.incr(redis_prefix + "n", 2, ttl=5) == 2
    assert await store.incr(redis_prefix + "n", 3, ttl=5) == 5
    assert 0 < await store.client.pttl(redis_prefix + "n") <= 5000
    assert await store.delete(k, redis_prefix + "n", redis_prefix + "missing") == 2
    assert await store.get(k) is None
    assert await store.delete() == 0
    assert isinstance(store, ScriptingStore)


async def test_noscript_falls_back_to_eval_and_caches(store, redis_prefix):
    # a script this server has never seen: the first EVALSHA answers NOSCRIPT
    script = LuaScript(f"-- {uuid.uuid4()}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await store.client.script_exists(script.sha) == [False]
    assert await store.eval_script(script, [redis_prefix + "c"], [5]) == 5
    assert await store.client.script_exists(script.sha) == [True]
    assert await store.eval_script(script, [redis_prefix + "c"], [1]) == 6
    await store.delete(redis_prefix + "c")


async def test_wrong_sha_is_recovered(store, redis_prefix):
    # a stale/wrong sha (as after a failover to a node without the script) must still run
    script = LuaScript("return ARGV[1]", sha="0" * 40)
    assert await store.eval_script(script, [redis_prefix + "x"], ["ok"]) == b"ok"


async def test_script_error_is_store_error(store, redis_prefix):
    with pytest.raises(StoreUnavailableError):
        await store.eval_script(LuaScript("return redis.error_reply('boom')"), [], [])


async def test_publish_subscribe(store, redis_prefix):
    ch = redis_prefix + "ch"
    got: list[bytes] = []

    async def reader() -> None:
        async for msg in store.subscribe(ch):
            got.append(msg)
            return

    task = asyncio.create_task(reader())
    for _ in range(50):
        await asyncio.sleep(0.02)
        await store.publish(ch, b"hi")
        if task.done():
            break
    await asyncio.wait_for(task, 2)
    assert got == [b"hi"]


def test_backoff_state_machine():
    b = Backoff(0.5, 2.0)
    assert b.allow(0) and not b.is_open
    assert b.failure(0.0) is True
    assert b.is_open
    assert not b.allow(0.4)
    assert b.allow(0.5)  # one probe
    assert not b.allow(0.5)  # others still fail fast while it runs
    assert b.failure(0.5) is False  # probe failed: doubled backoff
    assert not b.allow(1.4) and b.allow(1.5)
    b.failure(1.5)
    b.allow(3.5)
    b.failure(3.5)  # capped at 2.0
    assert not b.allow(5.4) and b.allow(5.5)
    b.success()
    assert b.allow(5.5) and not b.is_open and b.failures == 0


async def test_down_redis_fails_fast_then_recovers(private_redis):
    store = RedisStore(private_redis.url, backoff_min=0.3, backoff_max=0.3)
    try:
        await store.set("k", b"v")
        private_redis.stop()
        with pytest.raises(StoreUnavailableError):
            await store.get("k")
        assert not store.available
        # while backing off no I/O happens: calls fail in microseconds
        t0 = time.perf_counter()
        for _ in range(100):
            with pytest.raises(StoreUnavailableError):
                await store.get("k")
        # (~5 ms of work; the bound is the 0.3 s back-off, within which no probe may run)
        assert time.perf_counter() - t0 < 0.25
        private_redis.start()
        await asyncio.sleep(0.35)
        # the probe reconnects (no restart of the store needed); data was not persisted
        assert await store.get("k") is None
        assert store.available
        await store.set("k", b"again")
        assert await store.get("k") == b"again"
    finally:
        await store.aclose()


async def test_unreachable_host_costs_at_most_the_timeout():
    # 192.0.2.0/24 is TEST-NET-1: connects hang (or fail) rather than being refused
    store = RedisStore("redis://192.0.2.1:6379/0", connect_timeout=0.1, timeout=0.1)
    try:
        t0 = time.perf_counter()
        with pytest.raises(StoreUnavailableError):
            await store.get("k")
        assert time.perf_counter() - t0 < 0.5
        assert "192.0.2.1" in store._safe_url()
    finally:
        await store.aclose()


def test_password_never_in_messages():
    s = RedisStore("redis://user:secret@127.0.0.1:1/0")
    assert "secret" not in s._safe_url()
