"""Calendar periods (day, month) in a time zone, as unix-second intervals."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


def period(kind: str, now: float, tz: ZoneInfo) -> tuple[str, float, float]:
    """``(id, start, end)`` of the ``kind`` ("day" or "month") period containing ``now``.

    Boundaries are local midnights of ``tz``; a day spanning a DST change is 23 or 25 hours.
    """
    dt = datetime.fromtimestamp(now, tz)
    if kind == "day":
        start = datetime(dt.year, dt.month, dt.day, tzinfo=tz)
        nxt = start.date() + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
        pid = f"d{start:%Y-%m-%d}"
    elif kind == "month":
        start = datetime(dt.year, dt.month, 1, tzinfo=tz)
        end = datetime(dt.year + dt.month // 12, dt.month % 12 + 1, 1, tzinfo=tz)
        pid = f"m{start:%Y-%m}"
    else:
        raise ValueError(f"unknown period {kind!r}")
    return pid, start.timestamp(), end.timestamp()
