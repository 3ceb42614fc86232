"""Build a state store from configuration."""

from __future__ import annotations

from typing import Literal

from portway.state.base import StateStore
from portway.state.memory import MemoryStore
from portway.state.redis import RedisStore


def open_store(
    backend: Literal["memory", "redis"] = "memory",
    *,
    redis_url: str = "redis://127.0.0.1:6379/0",
    connect_timeout: float = 0.25,
    timeout: float = 0.25,
) -> StateStore:
    """A new store for ``backend``; performs no I/O (connections open on first use)."""
    if backend == "memory":
        return MemoryStore()
    if backend == "redis":
        return RedisStore(redis_url, connect_timeout=connect_timeout, timeout=timeout)
    raise ValueError(f"unknown state backend {backend!r}: use memory or redis")
