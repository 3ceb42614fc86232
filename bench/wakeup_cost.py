#!/usr/bin/env python3
"""How much a loopback send() costs when the receiving process is idle vs busy.

On this project's 2-core VM a send that has to wake an idle peer costs ~5x more CPU in the
sender than one to a peer that is already running; a proxy that is slower than its peers
keeps them idle and pays this on every write (see docs/performance.md).

    python bench/wakeup_cost.py
"""

from __future__ import annotations

import os
import select
import socket
import time


def main() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        c, _ = srv.accept()
        ep = select.epoll()
        ep.register(c.fileno(), select.EPOLLIN)
        while True:
            ep.poll()
            d = c.recv(65536)
            if not d:
                os._exit(0)
            c.send(b"k")
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for label, pause in (("peer idle (200 µs pause)", 0.0002), ("peer busy (no pause)", 0.0)):
        times = []
        for _ in range(5000):
            t = time.perf_counter()
            s.send(b"x" * 100)
            times.append(time.perf_counter() - t)
            s.recv(10)
            if pause:
                time.sleep(pause)
        times.sort()
        p50, p90 = times[len(times) // 2] * 1e6, times[int(len(times) * 0.9)] * 1e6
        print(f"send(), {label:26s} p50 {p50:5.1f} µs  p90 {p90:5.1f} µs")
    s.close()
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
