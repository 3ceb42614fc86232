"""Writing a response into the store: the entry, and its Vary index when it varies.

Every write carries the :class:`~.store.Guard` read before the request went upstream, so an
invalidation that came in between always wins (``store.py``). The head a hit sends is
prebuilt here (``hit.wire_of``), once per stored entry.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from portway.plugins.cache.entry import CacheEntry, VaryIndex
from portway.plugins.cache.hit import wire_of
from portway.plugins.cache.keys import variant_key
from portway.plugins.cache.policy import Pairs, assess, retention, validators, vary_names
from portway.plugins.cache.store import Guard

if TYPE_CHECKING:
    from portway.plugins.cache.plugin import CachePlugin


async def store_guarded(
    p: CachePlugin,
    key: str,
    index: VaryIndex | None,
    req_pairs: Pairs,
    entry: CacheEntry,
    guard: Guard,
) -> bool:
    """Store ``entry`` (and its Vary index); every write is refused once ``guard``'s
    version is stale, so an invalidation that came after the request went upstream
    always wins over this store."""
    now = p.clock()
    a = assess(entry, now, p.windows)
    ttl = retention(a, bool(validators(entry)), p.config.retain_stale)
    if ttl <= 0:
        p.counters.not_storable += 1
        return False
    entry.expires_at = now + ttl
    names = vary_names(entry.headers)
    if names is None:
        return False
    all_names = tuple(sorted(set(names) | set(p.config.vary_headers)))
    if not all_names:
        ok = await p.store.put(key, entry, ttl, guard)
    else:
        if index is None:
            current = await p.store.get(key)
            index = current if isinstance(current, VaryIndex) else None
        gen = index.gen if index is not None else secrets.token_hex(6)
        keep = max(ttl, index.expires_at - now) if index is not None else ttl
        new_index = VaryIndex(all_names, gen, now + keep)
        ok = await p.store.put(variant_key(key, gen, all_names, req_pairs), entry, ttl, guard)
        if ok:
            ok = await p.store.put(key, new_index, keep, guard)
    if ok:
        p.counters.stored += 1
        wire_of(entry, p.strip_fields)  # the head a hit sends, prebuilt now
    elif guard.version != await p.store.version(guard.key):
        p.counters.store_raced += 1
    else:
        p.counters.too_large += 1
    return ok
