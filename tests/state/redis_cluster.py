"""A real Redis Cluster for tests: 3 primaries (``redis-server --cluster-enabled yes``)
joined by ``redis-cli --cluster create``, on free ports, in a temporary directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(n: int) -> list[int]:
    """``n`` ports whose cluster bus ports (port + 10000) are free too."""
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        if p + 10000 < 65536 and p not in out and _free(p + 10000):
            out.append(p)
    return out


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    ).stdout


class RedisCluster:
    def __init__(self, primaries: int = 3) -> None:
        for exe in ("redis-server", "redis-cli"):
            if shutil.which(exe) is None:
                raise RuntimeError(f"{exe} is not installed (apt-get install redis-server)")
        self.ports = _cluster_ports(primaries)
        self.dir = tempfile.mkdtemp(prefix="portway-rcluster-")
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        self._spawn()
        out = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        self._wait_ok()

    def stop(self) -> None:
        """Stop every node (the cluster's node files stay: :meth:`restart` rejoins them)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def restart(self) -> None:
        self._spawn()
        self._wait_ok()

    def _spawn(self) -> None:
        for p in self.ports:
            self.procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(p),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{p}.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        self.dir,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 10
        for p in self.ports:
            while "PONG" not in _cli(p, "ping"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {p} did not start")
                time.sleep(0.05)

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + 15
        for p in self.ports:
            while "cluster_state:ok" not in _cli(p, "cluster", "info"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
