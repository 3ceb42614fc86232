#!/usr/bin/env python3
"""User-space instructions of a response written to a real uvloop transport: the head and a
1 KiB body joined then ``write`` (what ``FastExchange.settle`` did) against ``writelines``
of the two pieces (``WriteFlow.write_soon(head, body)``), and variants with a ``memoryview`` body.

The harness of ``bench/hotpath_bench.py`` writes to an interpreted in-memory transport, so
this is where the transport's own cost of the two calls is seen::

    for v in none join wlslice wltup wlmv joinmv; do for n in 1000 3000; do
      PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/wl.$v.$n \\
        $(python -c 'import sys;print(sys.executable)') bench/writelines_cost.py $n $v
    done; done   # per write = (total(3000) - total(1000)) / 2000
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop

HEAD = (
    b"HTTP/1.1 200 OK\r\nserver: x\r\ncontent-type: application/json\r\n"
    b"content-length: 1024\r\nvia: 1.1 portway\r\n\r\n"
)
UP = b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 1024\r\n\r\n"


class _P(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport


async def main(n: int, v: str) -> None:
    a, b = socket.socketpair()
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_connection(_P, sock=a)
    start = len(UP)
    for i in range(n):
        data = UP + bytes([i & 255]) * 1024  # a fresh read, as data_received gets
        if v == "join":
            t.write(b"".join([HEAD, data[start:]]))
        elif v == "wlslice":
            t.writelines([HEAD, data[start:]])
        elif v == "wltup":
            t.writelines((HEAD, data[start:]))
        elif v == "wlmv":
            t.writelines([HEAD, memoryview(data)[start:]])
        elif v == "joinmv":
            t.write(b"".join([HEAD, memoryview(data)[start:]]))
        if v != "none":
            b.recv(65536)
    t.close()
    b.close()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
