"""The gateway's own log: JSON lines (or plain text) with the current request id.

``setup_logging(level, file=None, json=True)`` configures the ``portway`` logger tree once per
process. The data plane sets :data:`request_id_var` while a request runs (``bind_request_id``)
so every record logged on its behalf carries ``request_id`` without threading it through calls.
A file handler reopens its file on ``SIGUSR1`` (``install_reopen_signal``) so logrotate can
move the file away and signal, as nginx does; writes never go to a rotated-away inode for
longer than the signal takes to arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextvars import Token
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

#: id of the request being handled by the current task, ``None`` outside requests
from portway.pipeline.context import request_id_var

#: LogRecord attributes that are not user-supplied ``extra=`` fields
_STD_ATTRS = frozenset(
    {
        "args",
        "asctime",
        "created",
        "exc_info",
        "exc_text",
        "filename",
        "funcName",
        "levelname",
        "levelno",
        "lineno",
        "message",
        "module",
        "msecs",
        "msg",
        "name",
        "pathname",
        "process",
        "processName",
        "relativeCreated",
        "stack_info",
        "taskName",
        "thread",
        "threadName",
        "request_id",
    }
)


@contextlib.contextmanager
def bind_request_id(request_id: str | None) -> Iterator[None]:
    """Make ``request_id`` the current one for the enclosed code (and tasks it creates)."""
    token: Token[str | None] = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from :data:`request_id_var` unless the caller set one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC, ms), ``level``, ``logger``,
    ``message``, ``request_id`` when known, ``exc`` for exceptions, plus any ``extra=`` fields
    (values that JSON cannot encode are written with ``str``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is None:
            rid = request_id_var.get()
        if rid is not None:
            out["request_id"] = rid
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_") and k not in out:
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines for terminals: ``time level logger [request_id] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(rid)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or request_id_var.get()
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


class ReopenableFileHandler(logging.StreamHandler[TextIO]):
    """Appends to ``path``; ``reopen()`` closes and reopens it (after logrotate moved it)."""

    def __init__(self, path: str, encoding: str = "utf-8") -> None:
        self.path = os.path.abspath(path)
        self._encoding = encoding
        super().__init__(self._open())

    def _open(self) -> TextIO:
        return open(self.path, "a", encoding=self._encoding)

    def reopen(self) -> None:
        """Switch to a fresh file at ``path``; records are never split between the two."""
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            with contextlib.suppress(OSError):
                old.flush()
                old.close()
        finally:
            self.release()

    def close(self) -> None:
        self.acquire()
        try:
            if not self.stream.closed:
                with contextlib.suppress(OSError):
                    self.stream.flush()
                    self.stream.close()
        finally:
            self.release()
        super().close()


_installed: list[logging.Handler] = []
_lock = threading.Lock()

#: third-party loggers whose records go through the gateway's handler (JSON), rate-limited:
#: the OpenTelemetry SDK logs each failed export and retry (``Transient error … retrying``)
#: from its worker thread, which without a collector is a line every second or so
FOREIGN_LOGGERS = ("opentelemetry",)


class RateLimitFilter(logging.Filter):
    """Lets through one record per (logger, message template) per ``interval`` seconds; the
    next record let through carries ``suppressed``: how many were dropped in between."""

    def __init__(self, interval: float = 60.0, clock: Any = None) -> None:
        super().__init__()
        import time

        self.interval = interval
        self._clock = clock or time.monotonic
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            if len(self._seen) > 1000:  # templates are few; a bound against odd callers
                self._seen.clear()
            self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.suppressed = last[1]
        return True


def _route_foreign(handler: logging.Handler, interval: float) -> None:
    """Send :data:`FOREIGN_LOGGERS` (warnings and up) to ``handler`` through a rate limit,
    instead of Python's last-resort plain-text stderr handler."""
    for name in FOREIGN_LOGGERS:
        lg = logging.getLogger(name)
        for old in list(lg.handlers):
            if getattr(old, "_portway", False):
                lg.removeHandler(old)
        fwd = _Forward(handler)
        fwd.addFilter(RateLimitFilter(interval))
        lg.addHandler(fwd)
        lg.setLevel(logging.WARNING)
        lg.propagate = False


class _Forward(logging.Handler):
    """Hands records to another handler (which keeps its formatter and filters)."""

    _portway = True

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


def setup_logging(
    level: str | int = "info",
    file: str | None = None,
    json: bool = True,
    *,
    logger: str = "portway",
    foreign_interval: float = 60.0,
) -> logging.Handler:
    """(Re)configure the ``portway`` logger tree: one handler to ``file`` (reopenable) or
    stderr, JSON or text lines. Idempotent: handlers from a previous call are replaced.
    Warnings of :data:`FOREIGN_LOGGERS` (the OpenTelemetry SDK) go to the same handler, at
    most one per message template per ``foreign_interval`` seconds."""
    lvl = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(lvl, int):
        raise ValueError(f"unknown log level {level!r}")
    handler: logging.Handler = (
        ReopenableFileHandler(file) if file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(RequestIdFilter())
    log = logging.getLogger(logger)
    with _lock:
        for old in _installed:
            log.removeHandler(old)
            old.close()
        _installed.clear()
        log.addHandler(handler)
        _installed.append(handler)
    log.setLevel(lvl)
    # The gateway's records must not be printed twice by a root handler an embedder set up.
    log.propagate = False
    _route_foreign(handler, foreign_interval)
    return handler


def reopen_log_files() -> int:
    """Reopen every file handler installed by :func:`setup_logging`; returns how many."""
    n = 0
    for h in list(_installed):
        if isinstance(h, ReopenableFileHandler):
            h.reopen()
            n += 1
    return n


def install_reopen_signal(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Reopen log files on ``SIGUSR1`` (logrotate's ``postrotate`` sends it)."""
    lp = loop or asyncio.get_running_loop()
    lp.add_signal_handler(signal.SIGUSR1, reopen_log_files)


def reopen_logs() -> None:
    """Signal-handler form of :func:`reopen_log_files`."""
    reopen_log_files()
