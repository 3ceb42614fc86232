"""``access_log``: one JSON line per request, written by a background thread.

The event loop only formats the line and appends it to a list (``line.py``, compiled, called
by the chain as a plain method: ``AccessLogHook``); a writer thread wakes every
``FLUSH_INTERVAL``, takes the whole list at once and writes it in one batch, so a slow disk
never stalls requests. The thread is not woken per line: a ``queue.Queue`` put costs a lock and a
condition notify, and waking the thread for each line made it contend for the GIL with the
event loop on every request (measured: +86 µs of CPU per request in
``bench/hotpath_bench.py --plugins request_id,access_log``). ``reopen()`` (SIGUSR1) makes
the writer reopen the file for logrotate. When more than ``max_queue`` lines wait, lines are
dropped and counted rather than growing memory without bound.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from typing import IO

from pydantic import Field

from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, PluginEnv, Stage
from portway.plugins.access_log.line import AccessLogHook, LineBuffer, LineFormatter

log = logging.getLogger("portway.access_log")

_writers: weakref.WeakSet[_Writer] = weakref.WeakSet()

#: seconds between the writer's batches (the most a line waits before it is written)
FLUSH_INTERVAL = 0.05


class AccessLogConfig(PluginConfig):
    path: str = Field("-", description="file path, or '-' for stdout")
    max_queue: int = Field(100_000, ge=100, description="lines buffered before dropping")


class _Writer:
    """Owns one output and the thread writing to it.

    ``put`` never blocks: the buffer (``line.LineBuffer``) is bounded, and a full buffer drops
    the line and counts it in ``dropped`` (the thread logs a warning with the count). The
    thread takes the buffer's whole list at once (``take``), so the two share it without a
    lock. A file is opened
    here, on the caller's thread, so an unwritable path fails the config build instead of a
    silent thread.
    The file is reopened when ``reopen()`` was called or when the path no longer names the
    open file (logrotate renamed or deleted it), checked at most once a second.
    """

    def __init__(self, path: str, max_queue: int) -> None:
        self.path = path
        self.buf = LineBuffer(max_queue)
        self.max_queue = max_queue
        self._stop = threading.Event()
        self.written = 0
        self._reported = 0
        self._reopen = False
        self._checked = 0.0
        self._fh: IO[bytes] = self._open()
        self._thread = threading.Thread(target=self._run, name="portway-access-log", daemon=True)
        self._thread.start()
        _writers.add(self)

    @property
    def pending(self) -> int:
        return len(self.buf.lines)

    @property
    def dropped(self) -> int:
        return self.buf.dropped

    def _open(self) -> IO[bytes]:
        if self.path == "-":
            return sys.stdout.buffer
        return open(self.path, "ab", buffering=0)

    def _rotated(self) -> bool:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return False
        self._checked = now
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        own = os.fstat(self._fh.fileno())
        return (st.st_ino, st.st_dev) != (own.st_ino, own.st_dev)

    def _maybe_reopen(self) -> None:
        if self.path == "-" or not (self._reopen or self._rotated()):
            return
        self._reopen = False
        try:
            fh = self._open()
        except OSError as e:
            log.error("access log: cannot reopen %s: %s", self.path, e)
            return
        self._fh.close()
        self._fh = fh

    def _run(self) -> None:
        buf = self.buf
        while True:
            stop = self._stop.wait(FLUSH_INTERVAL)
            while True:
                lines = buf.take()
                self._maybe_reopen()
                if lines:
                    try:
                        self._fh.write(b"".join(lines))
                        self._fh.flush()
                        self.written += len(lines)
                    except (OSError, ValueError) as e:
                        log.error("access log: write to %s failed: %s", self.path, e)
                if not buf.lines:
                    break
            dropped = self.dropped
            if dropped != self._reported:
                log.warning(
                    "access log: %d line(s) dropped (buffer of %d full); %d dropped in total",
                    dropped - self._reported,
                    self.max_queue,
                    dropped,
                )
                self._reported = dropped
            if stop:
                if self.path != "-":
                    self._fh.close()
                return

    def put(self, line: bytes) -> None:
        self.buf.put(line)

    def reopen(self) -> None:
        self._reopen = True
        self._checked = 0.0

    def close(self, timeout: float = 2.0) -> None:
        """Write what is buffered and stop; gives up after ``timeout`` (a stuck output)."""
        self._stop.set()
        self._thread.join(timeout)


def reopen_all() -> None:
    """Make every access-log writer reopen its file (``SIGUSR1``, after logrotate)."""
    for w in list(_writers):
        w.reopen()


class AccessLogPlugin(Plugin[AccessLogConfig]):
    """Fields: time, request_id, client_ip, method, path, route, upstream, target, status,
    bytes_in, bytes_out, latency_ms, upstream_latency_ms, user_agent, consumer, variant (the
    upstream a route's split/versions/fallback rules chose; null on other routes); and when
    set: profile, graphql_operation, aggregate."""

    name = "access_log"
    stage = Stage.edge
    Config = AccessLogConfig

    def __init__(self, config: AccessLogConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        key = f"access_log:{os.path.abspath(config.path) if config.path != '-' else '-'}"
        self._writer = env.shared(key, lambda: _SharedWriter(config.path, config.max_queue))
        self._format = LineFormatter()
        #: the compiled plain-call ``on_log`` (pipeline/runner.py ``LogHook``); a subclass
        #: keeps the method
        self._hook = AccessLogHook(self._format, self._writer.writer.buf)
        self.fast_log = self._hook if type(self) is AccessLogPlugin else None

    def on_log(self, ctx: RequestContext) -> None:
        self._hook.log(ctx)


class _SharedWriter:
    """Shared across reloads by path; closed when no graph uses it."""

    def __init__(self, path: str, max_queue: int) -> None:
        self.writer = _Writer(path, max_queue)

    async def aclose(self) -> None:
        self.writer.close()
