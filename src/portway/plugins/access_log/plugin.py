"""``access_log``: one JSON line per request, written by a background thread.

The event loop only formats the line and appends it to a queue; a writer thread batches lines
to stdout or a file, so a slow disk never stalls requests. ``reopen()`` (SIGUSR1) makes the
writer reopen the file for logrotate. When the queue is over ``max_queue`` lines, lines are
dropped and counted rather than growing memory without bound.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import weakref
from typing import IO

import orjson
from pydantic import Field

from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, PluginEnv, Stage

_writers: weakref.WeakSet[_Writer] = weakref.WeakSet()


class AccessLogConfig(PluginConfig):
    path: str = Field("-", description="file path, or '-' for stdout")
    max_queue: int = Field(100_000, ge=100, description="lines buffered before dropping")


class _Writer:
    def __init__(self, path: str, max_queue: int) -> None:
        self.path = path
        self.q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.max_queue = max_queue
        self.pending = 0
        self.dropped = 0
        self._reopen = False
        self._fh: IO[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="portway-access-log", daemon=True)
        self._thread.start()
        _writers.add(self)

    def _open(self) -> IO[bytes]:
        if self.path == "-":
            return sys.stdout.buffer
        return open(self.path, "ab", buffering=0)

    def _run(self) -> None:
        fh = self._open()
        while True:
            item = self.q.get()
            batch = [item]
            try:
                while len(batch) < 1024:
                    batch.append(self.q.get_nowait())
            except queue.Empty:
                pass
            stop = None in batch
            lines = [b for b in batch if b is not None]
            self.pending -= len(batch)
            if self._reopen and self.path != "-":
                self._reopen = False
                fh.close()
                fh = self._open()
            if lines:
                try:
                    fh.write(b"".join(lines))
                    fh.flush()
                except (OSError, ValueError):
                    pass
            if stop:
                if self.path != "-":
                    fh.close()
                return

    def put(self, line: bytes) -> None:
        if self.pending >= self.max_queue:
            self.dropped += 1
            return
        self.pending += 1
        self.q.put(line)

    def reopen(self) -> None:
        self._reopen = True

    def close(self, timeout: float = 2.0) -> None:
        self.q.put(None)
        self._thread.join(timeout)


def reopen_all() -> None:
    for w in list(_writers):
        w.reopen()


class AccessLogPlugin(Plugin[AccessLogConfig]):
    """Fields: time, request_id, client_ip, method, path, route, upstream, target, status,
    bytes_in, bytes_out, latency_ms, upstream_latency_ms, user_agent, consumer."""

    name = "access_log"
    stage = Stage.edge
    Config = AccessLogConfig

    def __init__(self, config: AccessLogConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        key = f"access_log:{os.path.abspath(config.path) if config.path != '-' else '-'}"
        self._writer = env.shared(key, lambda: _SharedWriter(config.path, config.max_queue))

    def on_log(self, ctx: RequestContext) -> None:
        req = ctx.request
        resp = ctx.response
        t = ctx.target
        ua = req.headers.get_raw(b"user-agent")
        rec = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "request_id": ctx.request_id or None,
            "client_ip": req.client_ip,
            "method": req.method,
            "path": req.path,
            "route": ctx.route_name,
            "upstream": ctx.upstream_name,
            "target": t.id if t is not None else None,
            "status": resp.status if resp is not None else 499,
            "bytes_in": (req.body.received if req.body is not None else 0),
            "bytes_out": ctx.bytes_out,
            "latency_ms": round((time.perf_counter() - ctx.start) * 1000, 3),
            "upstream_latency_ms": round(ctx.upstream_latency * 1000, 3)
            if ctx.upstream_latency is not None
            else None,
            "user_agent": ua.decode("latin-1") if ua is not None else None,
            "consumer": ctx.consumer.username if ctx.consumer is not None else None,
        }
        self._writer.writer.put(orjson.dumps(rec) + b"\n")


class _SharedWriter:
    """Shared across reloads by path; closed when no graph uses it."""

    def __init__(self, path: str, max_queue: int) -> None:
        self.writer = _Writer(path, max_queue)

    async def aclose(self) -> None:
        self.writer.close()
