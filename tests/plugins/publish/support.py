"""Helpers for the ``publish`` tests: a gateway config with the plugin, the live publisher,
condition waits, a private ``nats-server`` and a TCP relay that can cut a broker off."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from portway.plugins.publish.plugin import PublishPlugin
from portway.plugins.publish.publisher import Publisher
from tests.helpers import GatewayHandle, free_port, http_get, simple_config

#: the fields the issue lists; every event must carry exactly these
FIELDS = [
    "request_id",
    "route",
    "consumer",
    "status",
    "latency_ms",
    "upstream",
    "client_ip",
    "bytes_in",
    "bytes_out",
]

#: fast batching and retries so outages are short to test
FAST = {
    "batch": {"max_events": 50, "max_wait": "20ms"},
    "retry": {"initial": "50ms", "max": "500ms", "timeout": "2s"},
}


def gateway_config(up_url: str, publish: dict[str, Any]) -> dict[str, Any]:
    cfg = simple_config(up_url)
    cfg["plugins"] = [
        {"name": "request_id"},
        {"name": "publish", "config": {"fields": FIELDS, **FAST, **publish}},
    ]
    return cfg


def publisher_of(gw: GatewayHandle) -> Publisher:
    graph = gw.gateway.graph_ref.current
    for p in graph.plugins:
        if isinstance(p, PublishPlugin):
            return p.publisher
    raise AssertionError("no publish plugin in the live graph")


async def wait_for(cond: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0) -> None:
    """Wait until ``cond()`` holds (polled); fail with a clear message after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        r = cond()
        if isinstance(r, Awaitable):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def send_requests(gw: GatewayHandle, n: int, path: str = "/x") -> list[str]:
    """``n`` requests, 200 each; returns their request ids (X-Request-Id)."""
    ids: list[str] = []
    for _ in range(n):
        status, headers, _ = await http_get(gw.url + path)
        assert status == 200
        rid = headers.get("x-request-id")
        assert rid
        ids.append(rid)
    return ids


def check_event(ev: dict[str, Any], route: str = "r") -> None:
    assert list(ev) == FIELDS
    assert ev["route"] == route
    assert ev["upstream"] == "u"
    assert ev["status"] == 200
    assert ev["client_ip"] == "127.0.0.1"
    assert ev["consumer"] is None
    assert ev["bytes_in"] == 0
    assert isinstance(ev["bytes_out"], int) and ev["bytes_out"] > 0
    assert isinstance(ev["latency_ms"], int | float) and ev["latency_ms"] >= 0


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class NatsServer:
    """A private ``nats-server`` with JetStream (file store, so streams survive a restart)
    that a test may stop and start again on the same port."""

    def __init__(self) -> None:
        exe = shutil.which("nats-server")
        if exe is None:
            raise RuntimeError("nats-server is not installed (apt-get install nats-server)")
        self.exe = exe
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="portway-nats-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Relay:
    """A TCP relay on 127.0.0.1 in front of a broker. ``cut()`` closes the listener and every
    relayed connection (the broker looks down to its clients); ``restore()`` listens again
    on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    @property
    def up(self) -> bool:
        return self._server is not None

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            w.transport.abort()
            return
        self._writers |= {w, uw}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(r, uw), pump(ur, w))
        self._writers -= {w, uw}
