"""ConfigWatcher against a real file: edits, atomic replaces, touches, brief absences."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portway.config.watcher import ConfigWatcher

INTERVAL = 0.03


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[str] = []
        self.changed = asyncio.Event()
        self.fail_next = False

    async def __call__(self) -> None:
        self.seen.append(self.path.read_text())
        self.changed.set()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("reload blew up")

    async def wait(self, timeout: float = 2.0) -> None:
        await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()


@pytest.fixture
def cfg_file(tmp_path: Path) -> Path:
    p = tmp_path / "portway.yaml"
    p.write_text("server: {}\n")
    return p


@pytest.fixture
async def watched(cfg_file: Path) -> AsyncIterator[tuple[ConfigWatcher, Recorder]]:
    rec = Recorder(cfg_file)
    w = ConfigWatcher(cfg_file, rec, interval=INTERVAL, debounce=INTERVAL)
    await w.start()
    try:
        yield w, rec
    finally:
        await w.aclose()


async def quiet(rounds: int = 8) -> None:
    """Long enough for several polls plus a debounce."""
    await asyncio.sleep(INTERVAL * rounds)


async def test_no_callback_without_change(watched: tuple[ConfigWatcher, Recorder]) -> None:
    w, rec = watched
    await quiet()
    assert rec.seen == []
    assert w.content_hash is not None


async def test_detects_in_place_edit(
    cfg_file: Path, watched: tuple[ConfigWatcher, Recorder]
) -> None:
    _, rec = watched
    cfg_file.write_text("server: {workers: 2}\n")
    await rec.wait()
    assert rec.seen == ["server: {workers: 2}\n"]
    await quiet()
    assert len(rec.seen) == 1


async def test_detects_atomic_replace_with_same_size_and_mtime(
    cfg_file: Path, watched: tuple[ConfigWatcher, Recorder]
) -> None:
    _, rec = watched
    before = cfg_file.stat()
    tmp = cfg_file.with_name("portway.yaml.tmp")
    tmp.write_text("admin:  {}\n")  # same length, other bytes
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert tmp.stat().st_size == before.st_size
    os.replace(tmp, cfg_file)
    await rec.wait()
    assert rec.seen == ["admin:  {}\n"]


async def test_touch_without_content_change_is_ignored(
    cfg_file: Path, watched: tuple[ConfigWatcher, Recorder]
) -> None:
    _, rec = watched
    st = cfg_file.stat()
    os.utime(cfg_file, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    await quiet()
    assert rec.seen == []


async def test_brief_absence_then_new_content_fires_once(
    cfg_file: Path, watched: tuple[ConfigWatcher, Recorder]
) -> None:
    _, rec = watched
    cfg_file.unlink()
    await quiet()
    assert rec.seen == []
    cfg_file.write_text("server: {workers: 4}\n")
    await rec.wait()
    await quiet()
    assert rec.seen == ["server: {workers: 4}\n"]


async def test_absence_then_same_content_does_not_fire(
    cfg_file: Path, watched: tuple[ConfigWatcher, Recorder]
) -> None:
    _, rec = watched
    text = cfg_file.read_text()
    cfg_file.unlink()
    await quiet(3)
    cfg_file.write_text(text)
    await quiet()
    assert rec.seen == []


async def test_rapid_writes_are_debounced(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("v: 0\n")
    rec = Recorder(p)
    # a long debounce relative to the write cadence: the burst must settle first
    w = ConfigWatcher(p, rec, interval=0.02, debounce=0.3)
    await w.start()
    try:
        for i in range(1, 8):
            p.write_text(f"v: {i}\n" + "#" * i)
            await asyncio.sleep(0.02)
        await rec.wait()
        await asyncio.sleep(0.5)
        assert rec.seen == ["v: 7\n#######"]
    finally:
        await w.aclose()


async def test_callback_failure_does_not_stop_watching(
    cfg_file: Path, watched: tuple[ConfigWatcher, Recorder]
) -> None:
    _, rec = watched
    rec.fail_next = True
    cfg_file.write_text("server: {workers: 5}\n")
    await rec.wait()
    cfg_file.write_text("server: {workers: 6}\n")
    await rec.wait()
    assert rec.seen == ["server: {workers: 5}\n", "server: {workers: 6}\n"]


async def test_file_missing_at_start_fires_when_created(tmp_path: Path) -> None:
    p = tmp_path / "later.yaml"
    rec = Recorder(p)
    w = ConfigWatcher(p, rec, interval=INTERVAL, debounce=INTERVAL)
    await w.start()
    try:
        assert w.content_hash is None
        await quiet(3)
        p.write_text("server: {}\n")
        await rec.wait()
        assert rec.seen == ["server: {}\n"]
    finally:
        await w.aclose()


async def test_symlink_swap_is_followed(tmp_path: Path) -> None:
    # the Kubernetes ConfigMap layout: the watched path is a symlink that gets re-pointed
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("server: {}\n")
    b.write_text("admin: {}\n")
    link = tmp_path / "portway.yaml"
    link.symlink_to(a)
    rec = Recorder(link)
    w = ConfigWatcher(link, rec, interval=INTERVAL, debounce=INTERVAL)
    await w.start()
    try:
        tmp_link = tmp_path / "portway.yaml.new"
        tmp_link.symlink_to(b)
        os.replace(tmp_link, link)
        await rec.wait()
        assert rec.seen == ["admin: {}\n"]
    finally:
        await w.aclose()


async def test_aclose_is_idempotent_and_stops_polling(cfg_file: Path) -> None:
    rec = Recorder(cfg_file)
    w = ConfigWatcher(cfg_file, rec, interval=INTERVAL, debounce=INTERVAL)
    await w.start()
    await w.aclose()
    await w.aclose()
    cfg_file.write_text("server: {workers: 9}\n")
    await quiet()
    assert rec.seen == []
