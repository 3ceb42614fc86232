"""The workers' change log: ops reach siblings, acks say when, a starting worker catches up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from portway.runtime.peers import PeerLog


class Worker:
    def __init__(self, d: Path, wid: int, n: int, siblings: list[Worker]) -> None:
        self.applied: list[dict[str, Any]] = []
        self.siblings = siblings

        async def apply(op: dict[str, Any]) -> None:
            self.applied.append(op)

        def notify() -> None:  # what the supervisor does with SIGUSR2
            for w in siblings:
                asyncio.get_running_loop().create_task(w.log.catch_up())

        self.log = PeerLog(d, wid, n, notify, apply)


async def test_share_waits_for_every_sibling_and_skips_its_own(tmp_path: Path) -> None:
    siblings: list[Worker] = []
    siblings += [Worker(tmp_path, i, 3, siblings) for i in range(3)]
    lagging = await siblings[0].log.share({"op": "drain", "upstream": "u", "target": "t"})
    assert lagging == []
    assert siblings[0].applied == []
    for w in siblings[1:]:
        assert [op["op"] for op in w.applied] == ["drain"]
        assert w.applied[0]["from"] == 0


async def test_a_silent_sibling_is_reported_lagging(tmp_path: Path) -> None:
    siblings: list[Worker] = []
    siblings += [Worker(tmp_path, i, 2, siblings) for i in range(2)]
    siblings[0].log._notify = lambda: None  # the signal never arrives
    lagging = await siblings[0].log.share({"op": "purge", "key": "k"}, timeout=0.2)
    assert lagging == [1]


async def test_a_starting_worker_replays_drains_and_reloads_once(tmp_path: Path) -> None:
    siblings: list[Worker] = []
    siblings += [Worker(tmp_path, i, 2, siblings) for i in range(2)]
    first = siblings[0]
    first.log._notify = lambda: None
    for op in ({"op": "reload"}, {"op": "drain", "upstream": "u", "target": "t"}, {"op": "reload"}):
        await first.log.share(op, timeout=0.01)
    late = Worker(tmp_path, 1, 2, [])
    await late.log.catch_up(replay=True)
    assert [op["op"] for op in late.applied] == ["drain", "reload"]
    # acknowledged up to the end of the log; nothing is applied twice
    assert await first.log.wait_acked(first.log.path.stat().st_size, 0.1) == []
    await late.log.catch_up()
    assert len(late.applied) == 2
