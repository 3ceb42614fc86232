"""Write batching (http/flow.py): the first write of a loop pass goes out at once unless the
previous pass wrote to several transports; the rest of a pass is sent at its end."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from portway.http.flow import BATCH_MAX, WriteFlow


class _Transport:
    def __init__(self, log: list[tuple[str, bytes]], name: str) -> None:
        self.log = log
        self.name = name

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))

    def writelines(self, pieces: list[bytes]) -> None:
        self.log.append((self.name, b"".join(pieces)))


class _Proto(WriteFlow):
    def __init__(self, log: list[tuple[str, bytes]], name: str) -> None:
        self._can_write = None
        self.transport: Any = _Transport(log, name)


async def _next_pass() -> None:
    # the flush scheduled with call_soon runs before a callback scheduled after it
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


async def test_first_write_at_once_when_the_last_pass_was_not_busy() -> None:
    log: list[tuple[str, bytes]] = []
    a, b = _Proto(log, "a"), _Proto(log, "b")
    await _next_pass()
    a.write_soon(b"1")
    assert log == [("a", b"1")]  # at once
    b.write_soon(b"2")
    a.write_soon(b"3")
    assert log == [("a", b"1")]  # the rest of the pass waits for its end
    await _next_pass()
    assert log == [("a", b"1"), ("b", b"2"), ("a", b"3")]


async def test_after_a_busy_pass_the_first_write_is_held_with_the_rest() -> None:
    log: list[tuple[str, bytes]] = []
    a, b = _Proto(log, "a"), _Proto(log, "b")
    a.write_soon(b"1")
    b.write_soon(b"2")  # two transports in this pass: busy
    await _next_pass()
    log.clear()
    a.write_soon(b"3")
    b.write_soon(b"4")
    assert log == []  # held: sent back to back at the end of the pass
    await _next_pass()
    assert log == [("a", b"3"), ("b", b"4")]
    log.clear()
    a.write_soon(b"5")  # a held pass with one transport: not busy any more
    assert log == []
    await _next_pass()
    assert log == [("a", b"5")]
    log.clear()
    a.write_soon(b"6")
    assert log == [("a", b"6")]  # one request per pass again: at once
    await _next_pass()


async def _script(pair: bool) -> list[list[tuple[str, bytes]]]:
    rnd = random.Random(26)
    log: list[tuple[str, bytes]] = []
    ps = [_Proto(log, n) for n in "abc"]
    snaps = []
    for step in range(400):
        op = rnd.randrange(6)
        p = ps[rnd.randrange(3)]
        head = b"h%d|" % step
        body = b"b" * (BATCH_MAX if rnd.random() < 0.05 else rnd.randrange(0, 40))
        if op == 0:
            await _next_pass()
        elif op == 1:
            p.write_soon(head)
        elif op == 2:
            p.closing = not p.closing
        elif pair:
            p.write_soon(head, body)
        else:
            p.write_soon(head + body)
        snaps.append(list(log))
    await _next_pass()
    snaps.append(list(log))
    return snaps


def test_a_pair_is_written_where_and_when_its_join_would_be() -> None:
    """``write_soon(h, b)`` against ``write_soon(h + b)`` (each in a loop of its own:
    the batch is per loop): after every step, the same bytes on the same transports in the
    same order — single writes, pairs, big pairs, a closing transport, busy and quiet
    passes."""
    pairs = asyncio.run(_script(True))
    joined = asyncio.run(_script(False))
    assert pairs == joined
    assert len(pairs[-1]) > 50
