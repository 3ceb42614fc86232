"""Bounded memos for the request path (Host values, paths, route matches, forwarding bytes).

A memo maps an input seen on earlier requests to a result that depends on nothing else; it is
cleared whole when full, so a client sending ever-new inputs costs one ``clear`` per
``limit`` requests and never grows memory.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key`` (clearing ``memo`` first when it holds ``limit``
    entries) and return it."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
