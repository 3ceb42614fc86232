"""The gRPC interop *client* cases (the spec's ``doc/interop-test-descriptions.md``), each a
blocking function of ``(Clients, InteropServer)`` that raises ``AssertionError`` on a
deviation. Run in a thread (``asyncio.to_thread``) so the gateway's event loop stays free.
The server is passed for what only the server can see (a cancellation, the deadline)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from tests.proxy.grpc.interop_support import INITIAL_KEY, TRAILING_KEY, Clients, InteropServer

WAIT = 30.0  # generous bound for every blocking wait: a loaded 2-core CI machine
REQUEST_SIZES = (27182, 8, 1828, 45904)
RESPONSE_SIZES = (31415, 9, 2653, 58979)
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"
INITIAL_VALUE = "test_initial_metadata_value"
TRAILING_VALUE = b"\xab\xab\xab"
Case = Callable[[Clients, InteropServer], None]
GZIP: dict[str, Any] = {"compression": grpc.Compression.Gzip}


class Feed:
    """A request iterator fed one message at a time (a duplex call in lock step)."""

    def __init__(self) -> None:
        self._q: queue.Queue[Any] = queue.Queue()

    def put(self, msg: Any) -> None:
        self._q.put(msg)

    def close(self) -> None:
        self._q.put(None)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._q.get()
            if item is None:
                return
            yield item


def _payload(c: Clients, size: int) -> Any:
    return c.messages.Payload(body=b"\x00" * size)


def _large_request(c: Clients, **kw: Any) -> Any:
    return c.messages.SimpleRequest(response_size=314159, payload=_payload(c, 271828), **kw)


def _out_request(c: Clients, req_size: int, resp_size: int, **kw: Any) -> Any:
    m = c.messages
    params = [m.ResponseParameters(size=resp_size)]
    return m.StreamingOutputCallRequest(
        response_parameters=params, payload=_payload(c, req_size), **kw
    )


def _raises(fn: Callable[[], Any], code: grpc.StatusCode) -> grpc.RpcError:
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def empty_unary(c: Clients, s: InteropServer) -> None:
    assert c.test.EmptyCall(c.empty.Empty(), timeout=WAIT) == c.empty.Empty()


def large_unary(c: Clients, s: InteropServer, **kw: Any) -> None:
    reply = c.test.UnaryCall(_large_request(c), timeout=WAIT, **kw)
    assert reply.payload.body == b"\x00" * 314159


def client_compressed_unary(c: Clients, s: InteropServer) -> None:
    m = c.messages
    req = _large_request(c, expect_compressed=m.BoolValue(value=True))
    assert len(c.test.UnaryCall(req, timeout=WAIT, **GZIP).payload.body) == 314159
    req = _large_request(c, expect_compressed=m.BoolValue(value=False))
    assert len(c.test.UnaryCall(req, timeout=WAIT).payload.body) == 314159


def server_compressed_unary(c: Clients, s: InteropServer) -> None:
    for compressed in (True, False):
        req = _large_request(c, response_compressed=c.messages.BoolValue(value=compressed))
        assert c.test.UnaryCall(req, timeout=WAIT).payload.body == b"\x00" * 314159


def client_streaming(c: Clients, s: InteropServer, **kw: Any) -> None:
    m = c.messages
    reqs = [m.StreamingInputCallRequest(payload=_payload(c, n)) for n in REQUEST_SIZES]
    reply = c.test.StreamingInputCall(iter(reqs), timeout=WAIT, **kw)
    assert reply.aggregated_payload_size == 74922


def client_compressed_streaming(c: Clients, s: InteropServer) -> None:
    client_streaming(c, s, **GZIP)


def server_streaming(c: Clients, s: InteropServer, compressed: bool | None = None) -> None:
    m = c.messages
    params = []
    for i, n in enumerate(RESPONSE_SIZES):
        p = m.ResponseParameters(size=n)
        if compressed is not None:
            p.compressed.value = compressed if i % 2 == 0 else not compressed
        params.append(p)
    req = m.StreamingOutputCallRequest(response_parameters=params)
    sizes = [len(r.payload.body) for r in c.test.StreamingOutputCall(req, timeout=WAIT)]
    assert sizes == list(RESPONSE_SIZES)


def server_compressed_streaming(c: Clients, s: InteropServer) -> None:
    server_streaming(c, s, compressed=True)


def ping_pong(c: Clients, s: InteropServer) -> None:
    feed = Feed()
    call = c.test.FullDuplexCall(iter(feed), timeout=WAIT)
    for req_size, resp_size in zip(REQUEST_SIZES, RESPONSE_SIZES, strict=True):
        feed.put(_out_request(c, req_size, resp_size))
        assert len(next(call).payload.body) == resp_size  # one reply before the next request
    feed.close()
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def half_duplex(c: Clients, s: InteropServer) -> None:
    """Not a spec case: HalfDuplexCall, whose server answers only after the last request."""
    reqs = [_out_request(c, q, r) for q, r in zip(REQUEST_SIZES, RESPONSE_SIZES, strict=True)]
    sizes = [len(r.payload.body) for r in c.test.HalfDuplexCall(iter(reqs), timeout=WAIT)]
    assert sizes == list(RESPONSE_SIZES)


def empty_stream(c: Clients, s: InteropServer) -> None:
    call = c.test.FullDuplexCall(iter(()), timeout=WAIT)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


def _custom_metadata() -> list[tuple[str, Any]]:
    return [(INITIAL_KEY, INITIAL_VALUE), (TRAILING_KEY, TRAILING_VALUE)]


def _check_metadata(call: Any) -> None:
    assert (INITIAL_KEY, INITIAL_VALUE) in list(call.initial_metadata())
    assert (TRAILING_KEY, TRAILING_VALUE) in list(call.trailing_metadata())


def custom_metadata(c: Clients, s: InteropServer) -> None:
    reply, call = c.test.UnaryCall.with_call(
        _large_request(c), metadata=_custom_metadata(), timeout=WAIT
    )
    assert len(reply.payload.body) == 314159
    _check_metadata(call)
    dup = c.test.FullDuplexCall(
        iter([_out_request(c, 271828, 314159)]), metadata=_custom_metadata(), timeout=WAIT
    )
    assert [len(r.payload.body) for r in dup] == [314159]
    _check_metadata(dup)


def _status(c: Clients, message: str) -> None:
    m = c.messages
    status = m.EchoStatus(code=2, message=message)
    e = _raises(
        lambda: c.test.UnaryCall(m.SimpleRequest(response_status=status), timeout=WAIT),
        grpc.StatusCode.UNKNOWN,
    )
    assert e.details() == message
    req = m.StreamingOutputCallRequest(response_status=status)
    e = _raises(
        lambda: list(c.test.FullDuplexCall(iter([req]), timeout=WAIT)), grpc.StatusCode.UNKNOWN
    )
    assert e.details() == message


def status_code_and_message(c: Clients, s: InteropServer) -> None:
    _status(c, "test status message")


def special_status_message(c: Clients, s: InteropServer) -> None:
    _status(c, SPECIAL_MESSAGE)


def unimplemented_method(c: Clients, s: InteropServer) -> None:
    _raises(
        lambda: c.test.UnimplementedCall(c.empty.Empty(), timeout=WAIT),
        grpc.StatusCode.UNIMPLEMENTED,
    )


def unimplemented_service(c: Clients, s: InteropServer) -> None:
    _raises(
        lambda: c.unimplemented.UnimplementedCall(c.empty.Empty(), timeout=WAIT),
        grpc.StatusCode.UNIMPLEMENTED,
    )


def cancel_after_begin(c: Clients, s: InteropServer) -> None:
    """The call is begun (the server's handler runs) and cancelled before any message."""
    feed = Feed()
    fut = c.test.StreamingInputCall.future(iter(feed), timeout=WAIT)
    assert s.entered.wait(WAIT)
    assert fut.cancel()
    assert fut.code() == grpc.StatusCode.CANCELLED
    feed.close()
    assert s.cancelled.wait(WAIT)  # the cancellation reached the server through the gateway


def cancel_after_first_response(c: Clients, s: InteropServer) -> None:
    feed = Feed()
    call = c.test.FullDuplexCall(iter(feed), timeout=WAIT)
    feed.put(_out_request(c, 27182, 31415))
    assert len(next(call).payload.body) == 31415
    call.cancel()
    _raises(lambda: next(call), grpc.StatusCode.CANCELLED)
    feed.close()
    assert s.cancelled.wait(WAIT)


def timeout_on_sleeping_server(c: Clients, s: InteropServer) -> None:
    """The spec's case: a 1 ms deadline on a duplex call the server never answers."""
    feed = Feed()
    call = c.test.FullDuplexCall(iter(feed), timeout=0.001)
    feed.put(_out_request(c, 27182, 0))
    _raises(lambda: list(call), grpc.StatusCode.DEADLINE_EXCEEDED)
    feed.close()


def deadline_reaches_the_server(c: Clients, s: InteropServer) -> None:
    """Beyond the spec: a deadline long enough for the call to reach the server, which then
    waits for a request that never comes. The server saw the deadline (``grpc-timeout``
    passed on), the client gets DEADLINE_EXCEEDED, and the server's call ends too."""
    feed = Feed()
    call = c.test.FullDuplexCall(iter(feed), timeout=3)
    assert s.entered.wait(WAIT)
    assert s.seen_timeout is not None and 0 < s.seen_timeout <= 3.5
    _raises(lambda: list(call), grpc.StatusCode.DEADLINE_EXCEEDED)
    feed.close()
    assert s.cancelled.wait(WAIT)


CASES: dict[str, Case] = {
    f.__name__: f
    for f in (
        empty_unary,
        large_unary,
        client_compressed_unary,
        server_compressed_unary,
        client_streaming,
        client_compressed_streaming,
        server_streaming,
        server_compressed_streaming,
        ping_pong,
        half_duplex,
        empty_stream,
        custom_metadata,
        status_code_and_message,
        special_status_message,
        unimplemented_method,
        unimplemented_service,
        cancel_after_begin,
        cancel_after_first_response,
        timeout_on_sleeping_server,
        deadline_reaches_the_server,
    )
}
