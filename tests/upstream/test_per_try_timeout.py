"""``retries.per_try_timeout`` bounds each attempt (general and task-free paths), and
``retries.attempts`` has one default whether or not a ``retries:`` block is written."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from portway.config.loader import load_config_text
from tests.helpers import http_get, raw_upstream, run_gateway, run_upstream

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def _config(black_hole: str, good: str) -> dict[str, Any]:
    return {
        "upstreams": {
            "u": {
                "balancing": "round_robin",
                "targets": [{"url": black_hole}, {"url": good}],
                # read alone would give up after 5 s; each attempt may wait 0.5 s
                "timeouts": {"connect": "2s", "read": "5s", "total": "20s"},
                "retries": {"attempts": 2, "on": ["timeout"], "per_try_timeout": "500ms"},
            }
        },
        "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}],
    }


async def test_per_try_timeout_retries_a_black_hole_after_half_a_second() -> None:
    seen: list[float] = []  # when the black hole got a request head
    answered_first = asyncio.Event()

    async def silent_after_first(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        seen.append(time.monotonic())
        if not answered_first.is_set():
            # the first request is answered on a kept-alive connection: the next request
            # to this target reuses it, which the task-free path takes
            answered_first.set()
            w.write(OK)
            await w.drain()
            return True
        await asyncio.sleep(30)  # a black hole: accepted, read, never answered
        return False

    good_at: list[float] = []

    async def good(req: Any) -> Any:
        from portway.http.models import Response

        good_at.append(time.monotonic())
        return Response.json(200, {"ok": True})

    async with (
        raw_upstream(silent_after_first) as hole,
        run_upstream(good) as ok,
        run_gateway(_config(hole, ok.url)) as gw,
    ):
        # warm both targets: round robin sends one request to each
        for _ in range(2):
            assert (await http_get(gw.url + "/"))[0] == 200
        assert answered_first.is_set()
        # twice: once through the pooled connection (task-free path), once more freshly
        # connected on the general path after that connection was dropped
        for _ in range(2):
            before_hole, before_good = len(seen), len(good_at)
            t0 = time.monotonic()
            status = 0
            while len(seen) == before_hole:  # until a request lands on the black hole
                before_good = len(good_at)
                t0 = time.monotonic()
                status, _, _ = await http_get(gw.url + "/", timeout=15)
                assert status == 200
            elapsed = time.monotonic() - t0
            assert len(good_at) == before_good + 1  # the retry went to the good target
            waited = good_at[-1] - seen[-1]
            # 0.5 s per attempt; the 5 s read timeout would be the bug
            assert 0.45 <= waited < 3.0, waited
            assert elapsed < 3.5, elapsed
        assert gw.worker.app is not None and gw.worker.app.fast_fallbacks >= 1


def test_attempts_default_is_the_same_with_and_without_a_retries_block() -> None:
    base = "upstreams: {{u: {{targets: [{{url: 'http://127.0.0.1:1'}}]{extra}}}}}\n"
    plain = load_config_text(base.format(extra=""))
    block = load_config_text(base.format(extra=", retries: {on: [timeout]}"))
    assert plain.upstreams["u"].retries.attempts == 2
    assert block.upstreams["u"].retries.attempts == 2
