from __future__ import annotations

import asyncio
import random
import time

import pytest

from portway.plugins.cache.entry import CacheEntry, VaryIndex, decode, encode
from portway.plugins.cache.memory import MemoryStore
from portway.plugins.cache.redis_store import RedisStore
from portway.plugins.cache.store import Guard
from portway.plugins.cache.tiered import TieredStore


def mk(body: bytes = b"x", status: int = 200) -> CacheEntry:
    return CacheEntry(status, [(b"content-type", b"text/plain")], body, 1.0, 2.0, time.time() + 60)


def test_codec_roundtrip_and_garbage() -> None:
    e = mk(b"\x00\xffbody")
    back = decode(encode(e))
    assert back == e
    idx = VaryIndex(("accept",), "abc", 12.5)
    assert decode(encode(idx)) == idx
    for junk in (b"", b"E", b"E\x00\x00\x00\x05abc", b"V{", b"Zzz"):
        assert decode(junk) is None


async def test_memory_lru_evicts_least_recently_used() -> None:
    e = mk(b"a" * 1000)
    s = MemoryStore(max_bytes=3 * (e.size + 10), max_object=10_000)
    for k in ("k1", "k2", "k3"):
        assert await s.put(k, mk(b"a" * 1000), 60)
    assert await s.get("k1") is not None  # k1 is now most recently used
    assert await s.put("k4", mk(b"a" * 1000), 60)
    assert await s.get("k2") is None
    assert await s.get("k1") is not None
    assert s.stats()["memory_evictions"] == 1


async def test_memory_refuses_objects_over_max_object_and_expires() -> None:
    now = [0.0]
    s = MemoryStore(max_bytes=10**7, max_object=1000, clock=lambda: now[0])
    assert not await s.put("big", mk(b"x" * 100_000), 60)
    assert await s.put("small", mk(b"x" * 10), 5)
    now[0] = 5.1
    assert await s.get("small") is None
    assert s.bytes == 0


async def test_memory_bound_holds_under_churn() -> None:
    rnd = random.Random(7)
    s = MemoryStore(max_bytes=200_000, max_object=50_000)
    for i in range(5000):
        await s.put(f"k{rnd.randrange(2000)}", mk(b"x" * rnd.randrange(0, 40_000)), 60)
        if i % 7 == 0:
            await s.delete(f"k{rnd.randrange(2000)}")
        assert s.bytes <= 200_000
    assert s.bytes == sum(size for _, _, size in s._items.values())


async def test_memory_prefix_delete_and_clear() -> None:
    s = MemoryStore(10**6, 10**5)
    for k in ("r1/a", "r1/b", "r2/a"):
        await s.put(k, mk(), 60)
    assert await s.delete_prefix("r1/") == 2
    assert await s.get("r2/a") is not None
    assert await s.clear() == 1


async def test_redis_store_roundtrip_ttl_and_prefix_delete(
    redis_url: str, redis_prefix: str
) -> None:
    s = RedisStore(redis_url, redis_prefix)
    try:
        assert await s.put("r1/a", mk(b"body"), 60)
        assert await s.put("r1/b", VaryIndex(("accept",), "g", time.time() + 60), 60)
        assert await s.put("r2/a", mk(), 0.2)
        got = await s.get("r1/a")
        assert isinstance(got, CacheEntry) and got.body == b"body"
        ttl = await s.client.pttl(s._okey("r1/a"))  # the key as stored (hash-tagged)
        assert 0 < ttl <= 60_000
        assert await s.delete_prefix("r1/") == 2
        assert await s.get("r1/b") is None
        await asyncio.sleep(0.3)
        assert await s.get("r2/a") is None
    finally:
        await s.clear()
        await s.aclose()


async def test_redis_store_errors_degrade_to_misses() -> None:
    s = RedisStore("redis://127.0.0.1:1/0", "x:", timeout=0.2)
    assert await s.get("k") is None
    # after a failure reads and writes skip Redis for a while (no cost per request)...
    assert not await s.put("k", mk(), 10)
    assert await s.get("k") is None
    assert s.stats()["redis_errors"] == 1
    # ...invalidations still try, since a stale object elsewhere would outlive them
    assert await s.delete("k") == 0
    assert await s.delete_prefix("") == 0
    assert s.stats()["redis_errors"] == 3
    await s.aclose()


async def test_redis_store_retries_after_the_down_window(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import portway.plugins.cache.redis_store as rs

    monkeypatch.setattr(rs, "DOWN_FOR", 0.05)
    s = RedisStore(redis_url, redis_prefix)
    s._down_until = asyncio.get_running_loop().time() + 0.05  # as after a failure
    assert not await s.put("k", mk(), 10)  # skipped while down
    await asyncio.sleep(0.06)
    assert await s.put("k", mk(), 10)
    assert await s.get("k") is not None
    await s.aclose()


async def test_tiered_instances_share_objects_and_purges(redis_url: str, redis_prefix: str) -> None:
    a = TieredStore(MemoryStore(10**6, 10**5), RedisStore(redis_url, redis_prefix), front_ttl=60)
    b = TieredStore(MemoryStore(10**6, 10**5), RedisStore(redis_url, redis_prefix), front_ttl=60)
    await a.start()
    await b.start()
    try:
        await a.put("r/k", mk(b"shared"), 60)
        got = await b.get("r/k")  # from Redis, now also in b's memory tier
        assert isinstance(got, CacheEntry) and got.body == b"shared"
        assert b.front.get_nowait("r/k") is not None
        await a.delete_prefix("r/")
        for _ in range(100):  # b drops its memory copy when the purge notice arrives
            if b.front.get_nowait("r/k") is None:
                break
            await asyncio.sleep(0.01)
        assert await b.get("r/k") is None
    finally:
        await a.clear()
        await a.aclose()
        await b.aclose()


async def _guarded_put_and_invalidate(s: MemoryStore | RedisStore | TieredStore) -> None:
    obj, version = await s.lookup("r1/k")
    assert obj is None and version == ""
    assert await s.put("r1/k", mk(b"v1"), 60, Guard("r1/k", version))
    assert await s.invalidate("r1/k") == 1
    assert await s.get("r1/k") is None
    # a store guarded by the version read before the invalidation is refused
    assert not await s.put("r1/k", mk(b"late"), 60, Guard("r1/k", version))
    assert await s.get("r1/k") is None
    obj, newer = await s.lookup("r1/k")
    assert obj is None and newer not in ("", None)
    assert await s.version("r1/k") == newer
    assert await s.put("r1/k", mk(b"v2"), 60, Guard("r1/k", newer))
    got = await s.get("r1/k")
    assert isinstance(got, CacheEntry) and got.body == b"v2"
    # unguarded writes (and other keys) are not affected
    assert await s.put("r1/other", mk(), 60)


async def test_memory_guarded_put() -> None:
    await _guarded_put_and_invalidate(MemoryStore(10**6, 10**5))


async def test_redis_guarded_put(redis_url: str, redis_prefix: str) -> None:
    s = RedisStore(redis_url, redis_prefix)
    try:
        await _guarded_put_and_invalidate(s)
        assert s.stats()["redis_guard_refused"] == 1
    finally:
        await s.aclose()


async def test_tiered_guarded_put_skips_the_memory_tier(redis_url: str, redis_prefix: str) -> None:
    back = RedisStore(redis_url, redis_prefix)
    s = TieredStore(MemoryStore(10**6, 10**5), back)
    await s.start()
    try:
        await _guarded_put_and_invalidate(s)
        assert s.front.get_nowait("r1/k") is not None  # the accepted write reached memory
        obj, version = await s.lookup("r1/k")
        assert obj is not None and version is None  # a memory hit does not read Redis
    finally:
        await s.aclose()
