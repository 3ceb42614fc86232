"""Poll a config file and call back when its content changes.

Polling (stat every ``interval``, hash only when the stat changed) needs no inotify and works
the same on bind mounts, network filesystems and Kubernetes ConfigMap volumes, where the file
is a symlink swapped atomically: ``stat`` follows the link, and the inode is part of the
fingerprint, so an atomic ``rename`` over the file is seen even when size and mtime match.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from portway.tasks import stop_task

log = logging.getLogger("portway.config")


@dataclass(frozen=True, slots=True)
class _Stat:
    mtime_ns: int
    size: int
    inode: int
    device: int


def _stat(path: str) -> _Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _Stat(st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


class ConfigWatcher:
    """Calls ``on_change()`` once per settled change of the file's content.

    Contract:

    - The baseline is the file as it is when :meth:`start` is called; only later changes fire.
    - A change fires only after the file has kept the same stat for ``debounce`` seconds, so
      an editor's write-then-truncate or a slow copy triggers one reload of the final content.
    - Content equal to what was last reported (a ``touch``, or a revert before the debounce
      ends) does not fire.
    - A missing file (deleted, or mid-replacement) never fires; when it comes back with new
      content, that fires.
    - Callbacks never overlap; an exception from ``on_change`` is logged and watching goes on
      (the callback owns reporting a bad config).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        on_change: Callable[[], Awaitable[None]],
        interval: float = 1.0,
        debounce: float | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._on_change = on_change
        self.interval = interval
        self.debounce = min(interval, 0.5) if debounce is None else debounce
        self._stat: _Stat | None = None
        self._hash: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def content_hash(self) -> str | None:
        """sha256 of the content last seen (or reported), None if the file was missing."""
        return self._hash

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stat, self._hash = await asyncio.to_thread(self._snapshot)
        self._task = asyncio.create_task(self._run(), name=f"config-watcher:{self.path}")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    def _snapshot(self) -> tuple[_Stat | None, str | None]:
        st = _stat(self.path)
        return st, (_digest(self.path) if st is not None else None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher outlives any one failure
                log.exception("config watcher: polling %s failed", self.path)

    async def _poll(self) -> None:
        st = await asyncio.to_thread(_stat, self.path)
        if st is None or st == self._stat:
            return  # missing (perhaps mid-replace) or untouched
        # wait until the file stops changing before reading it
        while True:
            await asyncio.sleep(self.debounce)
            again = await asyncio.to_thread(_stat, self.path)
            if again is None:
                return  # vanished again; look at it on a later tick
            if again == st:
                break
            st = again
        digest = await asyncio.to_thread(_digest, self.path)
        if digest is None:
            return
        self._stat = st
        if digest == self._hash:
            return
        self._hash = digest
        log.info("config file %s changed", self.path)
        try:
            await self._on_change()
        except Exception:
            log.exception("config watcher: reload callback failed for %s", self.path)
