"""The metrics observer's compiled bucket search agrees with ``bisect.bisect_left``."""

from __future__ import annotations

import bisect
import random

from portway.observability.metrics import DURATION_BUCKETS, _bucket


def test_bucket_is_bisect_left() -> None:
    rng = random.Random(7)
    bounds = tuple(DURATION_BUCKETS)
    values = [rng.uniform(-1.0, 2.0 * bounds[-1]) for _ in range(5000)]
    values += [*bounds, 0.0, float("inf")]
    for v in values:
        assert _bucket(bounds, v) == bisect.bisect_left(bounds, v)
    assert _bucket((), 1.0) == 0
