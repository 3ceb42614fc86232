"""High-availability drill: HAProxy in front of 3 Portway instances sharing one Redis.

Under steady load through HAProxy, one instance is killed (SIGKILL), one is reloaded with a
new config pushed through its admin API (PUT /config), and one is restarted (SIGTERM:
graceful drain, then started again); finally the killed one is started again. Every client
request is counted; the script prints total / ok / failed and exits 1 if any failed.

Run: ``PYTHONPATH=src python bench/drill_ha.py [seconds] [concurrency]``
(needs ``haproxy`` — ``apt-get install haproxy`` — and ``redis-server``).

HAProxy's part (``haproxy.cfg`` below): active checks of ``/readyz`` on each instance's admin
listener every 200 ms, so a draining or dead instance leaves the rotation; ``retries`` with
``option redispatch`` and ``retry-on conn-failure empty-response response-timeout`` resend a
request that met a refused connection or a connection closed without an answer (the killed
instance's in-flight requests) to another instance. Only idempotent requests are sent here:
HAProxy does not resend others after a partial exchange.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from portway.http.client import simple_request

TOKEN = "drill-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


UPSTREAM = """
import asyncio, sys, uvloop
from portway.http.models import Response
from portway.http.server import serve_simple

async def handle(req):
    return Response.json(200, {"path": req.path})

async def main():
    await serve_simple(handle, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()

uvloop.run(main())
"""


@dataclass
class Instance:
    name: str
    port: int
    admin: int
    path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None

    def config(self, up: int, redis_url: str, extra_route: bool = False) -> dict[str, Any]:
        routes: list[dict[str, Any]] = [
            {
                "name": "api",
                "match": {"paths": ["/api"]},
                "upstream": "u",
                "plugins": [
                    {
                        "name": "rate_limit",
                        "config": {
                            # shared through Redis; far above the drill's rate: never refuses
                            "limits": [{"rate": 10_000_000, "per": "1s"}],
                            "key": ["global"],
                            "store": "redis",
                        },
                    }
                ],
            }
        ]
        if extra_route:
            routes.append({"name": "v2", "match": {"paths": ["/v2"]}, "upstream": "u"})
        return {
            "listeners": [{"name": "public", "address": f"127.0.0.1:{self.port}"}],
            "admin": {"address": f"127.0.0.1:{self.admin}", "token": TOKEN},
            "server": {"shutdown_timeout": "5s"},
            "state": {"backend": "redis", "redis_url": redis_url, "key_prefix": "drill:"},
            "upstreams": {"u": {"targets": [{"url": f"http://127.0.0.1:{up}"}]}},
            "plugins": [{"name": "request_id"}],
            "routes": routes,
        }

    def start(self) -> None:
        self.log = open(self.path.with_suffix(".log"), "ab")  # noqa: SIM115 (closed at exit)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portway", "run", "-c", str(self.path), "--workers", "1"],
            stdout=self.log,
            stderr=self.log,
        )

    async def ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = await simple_request(
                    "GET", f"http://127.0.0.1:{self.admin}/readyz", timeout=1.0
                )
                if r.status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout}s")


@dataclass
class Load:
    url: str
    results: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: bool = False
    total: int = 0

    async def client(self) -> None:
        while not self.stop:
            self.total += 1
            try:
                r = await simple_request("GET", self.url, timeout=10.0)
                key = "ok" if r.status == 200 else f"status {r.status}"
            except Exception as e:
                key = f"error {type(e).__name__}"
            self.results[key] += 1
            if key != "ok" and len(self.failures) < 20:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {key}")


def haproxy_cfg(front: int, instances: list[Instance]) -> str:
    servers = "\n".join(
        f"  server {i.name} 127.0.0.1:{i.port} check port {i.admin}" for i in instances
    )
    return f"""
global
  maxconn 4096
defaults
  mode http
  timeout connect 500ms
  timeout client 15s
  timeout server 10s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend fe
  bind 127.0.0.1:{front}
  default_backend be
backend be
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 200ms fall 1 rise 2
{servers}
"""


async def drill(seconds: float, concurrency: int) -> int:
    for exe in ("haproxy", "redis-server"):
        if shutil.which(exe) is None:
            print(f"{exe} is not installed (apt-get install {exe})", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="portway-drill-"))
    procs: list[subprocess.Popen[bytes]] = []
    instances: list[Instance] = []
    try:
        redis_port, up_port, front = free_port(), free_port(), free_port()
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)]))
        for n in ("g1", "g2", "g3"):
            inst = Instance(n, free_port(), free_port(), work / f"{n}.yaml")
            inst.path.write_text(yaml.safe_dump(inst.config(up_port, redis_url)))
            inst.start()
            instances.append(inst)
        for inst in instances:
            await inst.ready()
        cfg = work / "haproxy.cfg"
        cfg.write_text(haproxy_cfg(front, instances))
        procs.append(subprocess.Popen(["haproxy", "-f", str(cfg), "-db"]))
        load = Load(f"http://127.0.0.1:{front}/api")
        deadline = time.monotonic() + 10
        while True:
            try:
                if (await simple_request("GET", load.url, timeout=1.0)).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("haproxy does not answer")
            await asyncio.sleep(0.1)
        # wait for haproxy to see every instance up (rise 2 checks, 200 ms apart)
        await asyncio.sleep(1.0)

        clients = [asyncio.create_task(load.client()) for _ in range(concurrency)]
        t0 = time.monotonic()
        step = seconds / 6

        def say(msg: str) -> None:
            print(f"[{time.monotonic() - t0:5.1f}s] {msg} (requests so far: {load.total})")

        g1, g2, g3 = instances
        await asyncio.sleep(step)
        assert g1.proc is not None
        g1.proc.send_signal(signal.SIGKILL)
        g1.proc.wait()
        say("g1 killed (SIGKILL)")

        await asyncio.sleep(step)
        new = yaml.safe_dump(g2.config(up_port, redis_url, extra_route=True))
        r = await simple_request(
            "PUT",
            f"http://127.0.0.1:{g2.admin}/config",
            headers=[("authorization", f"Bearer {TOKEN}"), ("content-type", "application/yaml")],
            body=new.encode(),
            timeout=10.0,
        )
        v2 = await simple_request("GET", f"http://127.0.0.1:{g2.port}/v2", timeout=5.0)
        say(f"g2 reloaded through PUT /config: {r.status}; its new route /v2 answers {v2.status}")

        await asyncio.sleep(step)
        assert g3.proc is not None
        g3.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(g3.proc.wait)
        say(f"g3 stopped (SIGTERM, drained, exit {code})")
        g3.start()
        await g3.ready()
        say("g3 started again and ready")

        await asyncio.sleep(step)
        g1.start()
        await g1.ready()
        say("g1 started again and ready")

        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        load.stop = True
        await asyncio.gather(*clients)
        elapsed = time.monotonic() - t0
        failed = load.total - load.results["ok"]
        print()
        print(f"total requests: {load.total} in {elapsed:.1f}s ({load.total / elapsed:.0f}/s)")
        print(f"ok: {load.results['ok']}")
        print(f"failed: {failed}")
        for k, v in sorted(load.results.items()):
            if k != "ok":
                print(f"  {k}: {v}")
        for f in load.failures:
            print(f"  {f}")
        return 0 if failed == 0 and r.status == 200 and v2.status == 200 else 1
    finally:
        for inst in instances:
            if inst.proc is not None and inst.proc.poll() is None:
                inst.proc.terminate()
                try:
                    inst.proc.wait(10)
                except subprocess.TimeoutExpired:
                    inst.proc.kill()
            if inst.log is not None:
                inst.log.close()
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.environ.get("DRILL_KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    import uvloop

    return uvloop.run(drill(seconds, concurrency))


if __name__ == "__main__":
    sys.exit(main())
