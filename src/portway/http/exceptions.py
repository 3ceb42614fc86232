"""Connection-level exceptions of the data plane.

They subclass ``ConnectionError``/``TimeoutError`` so callers can treat them as the built-in
errors they are; mypyc cannot compile such subclasses, so they live here, in a module that
always stays interpreted, apart from the compiled protocols (see ``setup.py``).
"""

from __future__ import annotations


class UpstreamResetError(ConnectionError):
    """The upstream closed or broke the connection (``received`` tells whether any response
    byte had arrived, which decides if the exchange may be retried)."""

    def __init__(self, msg: str, received: bool = False) -> None:
        super().__init__(msg)
        self.received = received


class UpstreamProtocolError(ConnectionError):
    """The upstream sent something that is not valid HTTP/1.1."""


class ReadTimeoutError(TimeoutError):
    pass


class ClientDisconnectedError(ConnectionError):
    pass


class PoolOverflowError(Exception):
    """No connection to the target within the pool's queue timeout, or its queue is full
    (``pool.max_connections``; the proxy answers 503 ``upstream_overloaded``). ``waited``:
    the request queued (False: refused at once by ``max_queue``)."""

    def __init__(self, msg: str, waited: bool = True) -> None:
        super().__init__(msg)
        self.waited = waited
