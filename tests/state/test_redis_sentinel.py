"""``redis+sentinel://`` URLs: a gateway finds the primary through a real Sentinel (a
private ``redis-server --sentinel`` watching a private Redis) and limits exactly there."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.helpers import free_port, http_get, run_gateway, run_upstream


class Sentinel:
    def __init__(self, primary_port: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="portway-sentinel-"))
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor pw 127.0.0.1 {primary_port} 1\n"
        )
        exe = shutil.which("redis-server")
        assert exe is not None, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(
                ["redis-cli", "-p", str(self.port), "sentinel", "get-master-addr-by-name", "pw"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if str(primary_port) in out:
                return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"sentinel did not come up: {out!r}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinel(private_redis: RedisServer) -> Iterator[Sentinel]:
    s = Sentinel(private_redis.port)
    try:
        yield s
    finally:
        s.close()


async def test_rate_limit_through_a_sentinel_resolved_primary(
    sentinel: Sentinel, redis_prefix: str
) -> None:
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/pw/0"
    async with run_upstream() as up:
        cfg = {
            "state": {"redis_url": url, "key_prefix": redis_prefix},
            "upstreams": {"u": {"targets": [{"url": up.url}]}},
            "routes": [
                {
                    "name": "r",
                    "match": {"paths": ["/"]},
                    "upstream": "u",
                    "plugins": [
                        {
                            "name": "rate_limit",
                            "config": {
                                "limits": [{"rate": 7, "per": "24h"}],
                                "key": ["global"],
                                "store": "redis",
                                "on_store_error": "deny",
                                "redis": {"timeout": "2s"},
                            },
                        }
                    ],
                }
            ],
        }
        async with run_gateway(cfg) as a, run_gateway(cfg) as b:
            got = await asyncio.gather(*(http_get((a, b)[i % 2].url + "/x") for i in range(12)))
    statuses = [s for s, _, _ in got]
    assert statuses.count(200) == 7 and statuses.count(429) == 5, statuses
