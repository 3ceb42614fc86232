"""Shared fixtures. Redis fixtures first; other fixtures go below them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from portway.testing import free_port

# --- Redis -------------------------------------------------------------------------------
# Tests never FLUSHDB/FLUSHALL/SCRIPT FLUSH: the Redis may be shared. Every test namespaces
# its keys with `redis_prefix`.


class RedisServer:
    """A private ``redis-server`` (no persistence) that a test may stop and restart on the
    same port, to exercise outages without touching a shared Redis."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="portway-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed and $REDIS_URL is not set")
        self._proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis for the whole session: ``$REDIS_URL`` or a private ``redis-server``."""
    env = os.environ.get("REDIS_URL")
    if env:
        yield env
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards (and only they)."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    if "redis_url" not in request.fixturenames:
        return
    import redis

    url = request.getfixturevalue("redis_url")
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except redis.RedisError:
        pass


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may ``stop()`` and ``start()`` again."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


# --- serving paths -----------------------------------------------------------------------


@pytest.fixture(params=["cold", "warm"])
def path(request: pytest.FixtureRequest) -> Any:
    """The serving path a gateway test runs on (``tests.helpers.ServingPath``): ``cold``
    (general path) and ``warm`` (task-free path); ``await path.prepare(gw)`` before the
    requests under test, ``path.assert_served(n)`` after them."""
    from tests.helpers import ServingPath

    return ServingPath(request.param)
