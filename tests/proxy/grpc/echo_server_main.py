"""Runs the Echo server in its own process (a test kills it mid-stream): prints its port."""

from __future__ import annotations

import sys
import threading

from tests.proxy.grpc.grpc_support import EchoServer

if __name__ == "__main__":
    s = EchoServer(int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(s.port, flush=True)
    threading.Event().wait()
