"""The most recent gateway-made errors, for the dashboard's "recent errors" view.

:class:`RecentErrors` is a request observer (``on_request_done``, registered like the metrics
observer in every worker). It keeps the last ``size`` requests that the gateway itself
answered with a 4xx/5xx (a plugin's rejection, no route, an upstream failure, a bug) — not
statuses relayed from an upstream — each with its explain record, so the page can show why.

With several workers each one writes its ring to ``$PROMETHEUS_MULTIPROC_DIR`` (the
directory the metrics already share) at most once a second, and the admin worker merges the
files, newest first: the list covers every worker, at most ``flush_interval`` late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from portway.observability.observer import Observer

if TYPE_CHECKING:
    from portway.pipeline.context import RequestContext

log = logging.getLogger("portway.admin")

_PREFIX = "portway-errors-"


def _code_of(ctx: RequestContext) -> tuple[str | None, str | None]:
    """The error code and message the client was sent, from the error or the JSON body."""
    err = ctx.error
    code = getattr(err, "code", None)
    message = getattr(err, "message", None)
    if code is None:
        resp = ctx.response
        body = getattr(resp, "body", None)
        if isinstance(body, bytes | bytearray) and 0 < len(body) <= 4096:
            with contextlib.suppress(ValueError):
                data = orjson.loads(body)
                if isinstance(data, dict):
                    code = data.get("code")
                    message = message or data.get("error")
    if code is None and err is not None:
        code = type(err).__name__
    return (None if code is None else str(code)), (None if message is None else str(message))


class RecentErrors(Observer):
    """A bounded ring of gateway-made error records; see the module docstring."""

    def __init__(
        self, size: int = 200, *, directory: str | None = None, flush_interval: float = 1.0
    ) -> None:
        self.size = size
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)
        self._seq = 0
        self.directory = directory
        self.flush_interval = flush_interval
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._file = os.path.join(directory, f"{_PREFIX}{os.getpid()}.json") if directory else None

    @classmethod
    def from_env(cls) -> RecentErrors:
        return cls(directory=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None)

    # --- observer ---------------------------------------------------------------------------
    def on_request_done(self, ctx: RequestContext) -> None:
        resp = ctx.response
        if resp is not None and (resp.upstream or resp.status < 400):
            return
        if resp is None and ctx.error is None:
            return  # the client went away before anything was answered
        from portway.observability.debug import explain

        code, message = _code_of(ctx)
        req = ctx.request
        self._seq += 1
        try:
            record = explain(ctx)
        except Exception:  # explain is best effort; the error itself is still listed
            log.exception("explain failed for a recent error")
            record = None
        self._ring.append(
            {
                "id": f"{os.getpid()}-{self._seq}",
                "at": time.time(),
                "status": resp.status if resp is not None else None,
                "code": code,
                "message": message,
                "route": ctx.route_name,
                "method": req.method,
                "path": req.path,
                "host": req.host,
                "request_id": ctx.request_id or None,
                "upstream": ctx.upstream_name,
                "explain": record,
            }
        )
        self._dirty = True

    # --- sharing across workers -------------------------------------------------------------
    async def start(self) -> None:
        if self._file is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._dirty:
                self.flush()

    def flush(self) -> None:
        if self._file is None:
            return
        self._dirty = False
        tmp = f"{self._file}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(list(self._ring)))
            os.replace(tmp, self._file)
        except OSError as e:
            log.warning("cannot share recent errors: %s", e)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._dirty:
            self.flush()

    def records(self) -> list[dict[str, Any]]:
        """Every worker's records, newest first (this process's live, the others' files)."""
        out = list(self._ring)
        if self.directory:
            own = os.path.basename(self._file) if self._file else None
            try:
                names = os.listdir(self.directory)
            except OSError:
                names = []
            for name in names:
                if not (name.startswith(_PREFIX) and name.endswith(".json")) or name == own:
                    continue
                try:
                    with open(os.path.join(self.directory, name), "rb") as f:
                        data = orjson.loads(f.read())
                except (OSError, ValueError):
                    continue
                if isinstance(data, list):
                    out.extend(d for d in data if isinstance(d, dict))
        out.sort(key=lambda d: float(d.get("at") or 0), reverse=True)
        return out[: self.size]

    def find(self, record_id: str) -> dict[str, Any] | None:
        """A record by its ``id`` or its ``request_id``."""
        for d in self.records():
            if d.get("id") == record_id or (d.get("request_id") and d["request_id"] == record_id):
                return d
        return None


_instance: RecentErrors | None = None


def get_recent_errors() -> RecentErrors:
    """The process-wide recorder (one per worker, like the metrics observer)."""
    global _instance
    if _instance is None:
        _instance = RecentErrors.from_env()
    return _instance
