from __future__ import annotations

import asyncio

import pytest

from portway.state.factory import open_store
from portway.state.memory import MemoryStore
from portway.state.redis import RedisStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_get_set_ttl_and_delete():
    clock = Clock()
    s = MemoryStore(clock=clock)
    await s.set("a", b"1", ttl=2)
    await s.set("b", b"2")
    assert await s.get("a") == b"1"
    clock.t += 2
    assert await s.get("a") is None
    assert await s.get("b") == b"2"
    assert await s.delete("a", "b", "c") == 1
    assert await s.get("b") is None


async def test_incr_keeps_ttl_from_creation():
    clock = Clock()
    s = MemoryStore(clock=clock)
    assert await s.incr("n", 2, ttl=10) == 2
    clock.t += 5
    assert await s.incr("n", 3, ttl=10) == 5
    clock.t += 5
    assert await s.get("n") is None
    assert await s.incr("n") == 1
    await s.set("x", b"abc")
    with pytest.raises(ValueError):
        await s.incr("x")


async def test_expired_keys_are_swept():
    clock = Clock()
    s = MemoryStore(clock=clock)
    for i in range(100):
        await s.set(f"k{i}", b"v", ttl=1)
    clock.t += 2
    for _ in range(MemoryStore._SWEEP_EVERY):
        await s.set("live", b"v")
    assert len(s) == 1


async def test_pubsub_delivers_to_subscribers():
    s = MemoryStore()
    got: list[bytes] = []

    async def reader() -> None:
        async for msg in s.subscribe("ch"):
            got.append(msg)
            if len(got) == 2:
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    await s.publish("ch", b"one")
    await s.publish("other", b"x")
    await s.publish("ch", b"two")
    await asyncio.wait_for(task, 1)
    assert got == [b"one", b"two"]
    assert not s._subs


async def test_factory_builds_backends():
    m = open_store("memory")
    assert isinstance(m, MemoryStore)
    r = open_store("redis", redis_url="redis://127.0.0.1:1/0")
    assert isinstance(r, RedisStore)
    await r.aclose()
    with pytest.raises(ValueError):
        open_store("nope")  # type: ignore[arg-type]
