"""Keep-alive connection pool per target.

The pool is a LIFO stack of idle connections (the most recently used socket is the warmest and
the least likely to have been closed by the upstream's idle timer). Connections the upstream
closed while idle are dropped at acquire time; idle ones past ``idle_timeout`` are closed by a
lazy sweep, so an idle pool costs no timers.
"""

from __future__ import annotations

import ssl as _ssl
from typing import Any

from portway.http.client import UpstreamConnection, open_connection
from portway.http.limits import PoolSettings


class ConnectionPool:
    """Idle keep-alive connections to one ``host:port``."""

    def __init__(self, host: str, port: int, config: PoolSettings, scheme: str = "http") -> None:
        self.host = host
        self.port = port
        self.config = config
        # plain copies: read on every acquire/release (pydantic attribute reads are slow)
        self._idle_timeout = config.idle_timeout
        self._max_idle = config.max_idle
        self._idle: list[UpstreamConnection] = []
        self._ssl: Any = _ssl.create_default_context() if scheme == "https" else None
        self.opened = 0
        self.closed_pool = False

    def acquire_idle(self, now: float = -1.0) -> UpstreamConnection | None:
        """A live idle connection, or ``None``. ``now``: the loop time, when the caller has
        just read it."""
        idle = self._idle
        if not idle:
            return None
        limit = self._idle_timeout
        while idle:
            conn = idle.pop()
            if conn.closed or conn.closing or conn.transport is None:
                continue
            # the connection's own loop: asyncio.get_running_loop() costs a getpid() syscall
            if (now if now >= 0 else conn.now()) - conn.idle_since > limit:
                conn.close()
                continue
            return conn
        return None

    async def connect(self, timeout: float) -> UpstreamConnection:
        conn = await open_connection(
            self.host, self.port, timeout, ssl=self._ssl, server_hostname=self.host
        )
        self.opened += 1
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after a complete exchange; closes it if not reusable."""
        conn.finish()
        if not conn.reusable or self.closed_pool or self._max_idle == 0:
            conn.close()
            return
        now = conn.idle_since = conn.now()
        idle = self._idle
        if len(idle) >= self._max_idle:
            idle.pop(0).close()
        idle.append(conn)
        if len(idle) > 1 and now - idle[0].idle_since > self._idle_timeout:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        keep = []
        for c in self._idle:
            if now - c.idle_since > self._idle_timeout or c.closed:
                c.close()
            else:
                keep.append(c)
        self._idle = keep

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        self.closed_pool = True
        for c in self._idle:
            c.close()
        self._idle.clear()
