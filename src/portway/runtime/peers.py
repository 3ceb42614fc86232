"""Runtime changes shared by the workers of one instance.

With ``--workers N`` only worker 0 serves the admin API and watches the config file, yet a
reload, a target drain or a cache purge must reach every worker. :class:`PeerLog` is how:

- an append-only JSON-lines file ``ops.jsonl`` in the supervisor's runtime directory holds
  every change (``{"op": "reload" | "drain" | "purge", "from": worker id, ...}``); a line is
  appended under an exclusive ``flock`` so writers never interleave;
- the writer signals the supervisor (``SIGUSR2``), which forwards the signal to every worker;
- each worker reads the lines past its own offset, applies those it did not write, and then
  records the offset it has reached in ``ack.<worker id>`` (replaced atomically);
- the writer waits (bounded) until every sibling's ack covers the end of its line, so an
  admin call returns once the change is live in every worker, not merely requested.

A worker that starts replays the log's drains and purges, and reloads once if the log holds
a reload (a sibling may have reloaded while it was starting from the supervisor's config).
No sockets, no protocol of our own: the file is the medium, the signal only says "look".
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("portway.peers")

#: ops a restarted worker replays; a reload is implied by starting from the newest config
REPLAYED = frozenset({"drain", "purge"})

Applier = Callable[[dict[str, Any]], Awaitable[None]]


class PeerLog:
    """One worker's end of the shared change log (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        worker_id: int,
        workers: int,
        notify: Callable[[], None],
        apply: Applier,
    ) -> None:
        self.path = directory / "ops.jsonl"
        self.directory = directory
        self.worker_id = worker_id
        self.workers = workers
        self._notify = notify
        self._apply = apply
        self._offset = 0
        self._lock = asyncio.Lock()

    def _ack_path(self, wid: int) -> Path:
        return self.directory / f"ack.{wid}"

    def _append(self, line: bytes) -> int:
        with open(self.path, "ab") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                f.write(line)
                f.flush()
                return f.tell()
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    async def share(self, op: dict[str, Any], timeout: float = 10.0) -> list[int]:
        """Append ``op`` (already applied here), wake the siblings and wait until each has
        applied it; returns the ids of workers that had not acknowledged within ``timeout``."""
        data = dict(op)
        data["from"] = self.worker_id
        end = await asyncio.to_thread(self._append, orjson.dumps(data) + b"\n")
        self._notify()
        lagging = await self.wait_acked(end, timeout)
        if lagging:
            log.warning(
                "change %s not yet acknowledged by worker(s) %s after %.0fs",
                op.get("op"),
                ", ".join(map(str, lagging)),
                timeout,
            )
        else:
            log.info("change %s applied by all %d workers", op.get("op"), self.workers)
        return lagging

    def _acked(self, wid: int) -> int:
        try:
            return int(self._ack_path(wid).read_text() or 0)
        except (OSError, ValueError):
            return -1

    async def wait_acked(self, end: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        others = [w for w in range(self.workers) if w != self.worker_id]
        while True:
            lagging = [w for w in others if self._acked(w) < end]
            if not lagging or time.monotonic() >= deadline:
                return lagging
            await asyncio.sleep(0.01)

    async def catch_up(self, *, replay: bool = False) -> None:
        """Apply the lines written by other workers since the last call. ``replay`` (worker
        start): read from the beginning but apply only :data:`REPLAYED` ops."""
        async with self._lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            done = 0
            missed_reload: dict[str, Any] | None = None
            for line in data.splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    break  # a line still being written: read it next time
                done += len(line)
                try:
                    op = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.error("ignoring a malformed line in %s", self.path)
                    continue
                if not isinstance(op, dict) or op.get("from") == self.worker_id:
                    continue
                if replay and op.get("op") not in REPLAYED:
                    if op.get("op") == "reload":
                        missed_reload = op
                    continue
                try:
                    await self._apply(op)
                except Exception:
                    log.exception("applying shared change %s failed", op.get("op"))
            if missed_reload is not None:
                # a sibling reloaded while this worker was starting from an older config:
                # one reload brings it to the newest (a restarted worker only repeats its own)
                try:
                    await self._apply(missed_reload)
                except Exception:
                    log.exception("catching up with a reload failed")
            self._offset += done
            self._write_ack()

    def _write_ack(self) -> None:
        p = self._ack_path(self.worker_id)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(str(self._offset))
        os.replace(tmp, p)

    def clear_ack(self) -> None:
        with contextlib.suppress(OSError):
            self._ack_path(self.worker_id).unlink()
