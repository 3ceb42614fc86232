"""Give back the resident pages of code and constants that only start-up touched.

Loading and compiling a config runs code that serving never runs again: the YAML reader,
pydantic's validators, the ssl and asyncio modules' set-up, the imports themselves. The
pages of the shared libraries and of the interpreter that this code lives in stay counted
in the process's RSS (``RssFile``) for as long as it runs, although nothing reads them: a
worker forked by ``--workers N`` never carries them (a fork copies no page-table entries
for a file mapping it has not written), a single process carries ~8 MB of them.

:func:`drop_startup_pages` drops this process's page-table entries for the clean file pages
of every read-only file mapping, once, after start-up (and after a reload, which runs the
config code again). The page cache keeps the pages; a page still in use comes back on its
next touch as a minor fault (no I/O, ~0.5 µs), so the first requests after it pay a few
hundred such faults and RSS settles at what serving really touches.

Contract: only pages that are a file's own content are dropped. A page of a private mapping
that was written (relocations under RELRO, then made read-only) is anonymous memory whose
content exists nowhere else: ``/proc/self/pagemap`` tells the two apart (bit 61, "file page
or shared anonymous") and every run of pages handed to ``madvise(MADV_DONTNEED)`` is made
of file pages and absent pages only. Writable mappings are never touched. Where pagemap
cannot be read (not Linux, a restricted ``/proc``), nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("portway.residency")

_MADV_DONTNEED = 4
_PRESENT = 1 << 63
_SWAPPED = 1 << 62
_FILE = 1 << 61


def droppable_runs(entries: list[int]) -> list[tuple[int, int]]:
    """``(first, count)`` page runs of one mapping that are safe to drop and hold at least
    one resident page: every page in a run is absent or a present file page; an anonymous
    (written private) or swapped page ends a run and is kept."""
    runs: list[tuple[int, int]] = []
    start = -1
    resident = False
    for i, e in enumerate(entries):
        keep = (e & _PRESENT and not e & _FILE) or e & _SWAPPED
        if keep:
            if start >= 0 and resident:
                runs.append((start, i - start))
            start, resident = -1, False
            continue
        if start < 0:
            start = i
        if e & _PRESENT:
            resident = True
    if start >= 0 and resident:
        runs.append((start, len(entries) - start))
    return runs


def read_only_file_maps(maps_text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of the mappings in ``/proc/PID/maps`` text that map a file and are
    not writable (code, constants, the read-only part of relocated data)."""
    out: list[tuple[int, int]] = []
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or parts[4] == "0" or "w" in parts[1]:
            continue  # anonymous, [vdso]/[vvar] (inode 0) or writable
        lo, hi = parts[0].split("-")
        out.append((int(lo, 16), int(hi, 16)))
    return out


def drop_startup_pages() -> int:
    """Drop the resident clean file pages of this process's read-only file mappings;
    returns how many bytes were resident in the runs dropped (0 when nothing could be, or
    when ``PORTWAY_KEEP_STARTUP_PAGES=1`` keeps them)."""
    if not sys.platform.startswith("linux") or os.environ.get("PORTWAY_KEEP_STARTUP_PAGES") == "1":
        return 0
    try:
        with open("/proc/self/maps") as f:
            maps = read_only_file_maps(f.read())
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return 0
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        os.close(fd)
        return 0
    page = os.sysconf("SC_PAGE_SIZE")
    dropped = 0
    try:
        for lo, hi in maps:
            n = (hi - lo) // page
            raw = os.pread(fd, 8 * n, (lo // page) * 8)
            if len(raw) != 8 * n:
                continue
            entries: list[int] = memoryview(raw).cast("Q").tolist()  # native-endian u64
            for first, count in droppable_runs(entries):
                if madvise(lo + first * page, count * page, _MADV_DONTNEED) == 0:
                    dropped += page * sum(1 for e in entries[first : first + count] if e & _PRESENT)
    except OSError:
        pass
    finally:
        os.close(fd)
    log.debug("dropped %d KB of start-up file pages", dropped // 1024)
    return dropped
