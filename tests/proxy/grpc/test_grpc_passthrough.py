"""Native gRPC through the gateway: a real grpcio client (h2c prior knowledge) → Portway →
a real grpcio server over an ``h2c`` upstream. Every call kind, trailers, big messages
under flow control, deadlines, cancellation, 100 streams on one upstream connection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import uvloop

from tests.helpers import run_gateway
from tests.proxy.grpc.grpc_support import EchoServer, Stubs, channel, echo_pb2, gateway_config

MB = 1024 * 1024


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    s = EchoServer(workers=120).start()
    try:
        yield s
    finally:
        await asyncio.to_thread(s.stop)


def msg(**kw: Any) -> Any:
    return echo_pb2().Msg(**kw)


async def test_unary_with_metadata_and_trailers(echo: EchoServer) -> None:
    async with run_gateway(gateway_config(echo.url)) as gw:
        with channel(gw.port) as ch:
            stubs = Stubs(ch)
            reply, call = await asyncio.to_thread(
                stubs.unary.with_call, msg(text="hi", data=b"\x00\x01"), metadata=[("x-k", "v")]
            )
    assert reply.text == "echo:hi"
    assert reply.data == b"\x00\x01"
    assert ("x-trailer", "t-hi") in call.trailing_metadata()
    assert call.code() == grpc.StatusCode.OK
    assert ("x-k", "v") in echo.metadata


async def test_status_and_message_relayed(echo: EchoServer) -> None:
    async with run_gateway(gateway_config(echo.url)) as gw:
        with channel(gw.port) as ch:
            with pytest.raises(grpc.RpcError) as ei:
                await asyncio.to_thread(Stubs(ch).unary, msg(text="nope", count=5))
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert ei.value.details() == "failed: nope"


async def test_client_streaming(echo: EchoServer) -> None:
    def gen() -> Iterator[Any]:
        for i in range(5):
            yield msg(text=str(i), data=b"d" * 10)

    async with run_gateway(gateway_config(echo.url)) as gw:
        with channel(gw.port) as ch:
            reply = await asyncio.to_thread(Stubs(ch).client_stream, gen())
    assert reply.text == "0,1,2,3,4"
    assert reply.count == 50


async def test_server_streaming_messages_arrive_as_sent(echo: EchoServer) -> None:
    async with run_gateway(gateway_config(echo.url)) as gw:
        with channel(gw.port) as ch:
            stubs = Stubs(ch)

            def run() -> list[str]:
                it = stubs.server_stream(msg(text="s", count=3))
                return [m.text for m in it]

            texts = await asyncio.to_thread(run)
    assert texts == ["s-0", "s-1", "s-2"]


async def test_bidi_is_interactive(echo: EchoServer) -> None:
    """Each reply is read before the next request is written: messages are relayed as they
    come, both ways at once (no buffering of either side)."""
    async with run_gateway(gateway_config(echo.url)) as gw:
        with channel(gw.port) as ch:
            stubs = Stubs(ch)

            def run() -> list[str]:
                import queue

                q: queue.Queue[Any] = queue.Queue()

                def requests() -> Iterator[Any]:
                    while True:
                        item = q.get()
                        if item is None:
                            return
                        yield item

                it = stubs.bidi(requests())
                out = []
                for i in range(4):
                    q.put(msg(text=f"m{i}"))
                    out.append(next(it).text)  # would hang if either side were buffered
                q.put(None)
                assert list(it) == []
                return out

            got = await asyncio.wait_for(asyncio.to_thread(run), 30)
    assert got == ["re:m0", "re:m1", "re:m2", "re:m3"]


async def test_large_messages_both_ways_under_flow_control(echo: EchoServer) -> None:
    """10 MB up in 1 MB messages and 10 MB down: far above every HTTP/2 window."""

    def gen() -> Iterator[Any]:
        for i in range(10):
            yield msg(text=str(i), data=bytes([i]) * MB)

    async with run_gateway(gateway_config(echo.url)) as gw:
        with channel(gw.port) as ch:
            stubs = Stubs(ch)
            reply = await asyncio.to_thread(stubs.client_stream, gen())

            def down() -> int:
                return sum(len(m.data) for m in stubs.server_stream(msg(count=10, size=MB)))

            total = await asyncio.to_thread(down)
    assert reply.count == 10 * MB
    assert echo.received_bytes == 10 * MB
    assert total == 10 * MB


async def test_client_deadline_is_forwarded_and_enforced(echo: EchoServer) -> None:
    async with run_gateway(gateway_config(echo.url)) as gw:
        with channel(gw.port) as ch:
            stubs = Stubs(ch)
            reply = await asyncio.to_thread(stubs.unary, msg(text="a"), timeout=20)
            assert reply.text == "echo:a"
            # the upstream saw the client's deadline (less what already elapsed). gRPC core
            # reads its clock once per execution context, so under load ``time_remaining``
            # can exceed the forwarded value by a scheduling delay: the bound allows that,
            # far below the route's 60 s default that a lost deadline would show
            assert echo.seen_timeout is not None and 0 < echo.seen_timeout <= 20.5
            with pytest.raises(grpc.RpcError) as ei:
                await asyncio.to_thread(stubs.unary, msg(text="slow", delay_ms=3000), timeout=0.5)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_route_timeout_caps_the_deadline(echo: EchoServer) -> None:
    """No client deadline: the upstream's ``timeouts.total`` is the deadline, and the gateway
    answers DEADLINE_EXCEEDED when it passes (mid-stream: in the trailers)."""
    cfg = gateway_config(echo.url, upstream={"timeouts": {"total": "2s"}})
    async with run_gateway(cfg) as gw:
        with channel(gw.port) as ch:
            stubs = Stubs(ch)
            with pytest.raises(grpc.RpcError) as ei:
                await asyncio.to_thread(stubs.unary, msg(text="slow", delay_ms=4000))
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert echo.seen_timeout is not None and echo.seen_timeout <= 2.0

            def stream() -> list[str]:
                out = []
                with pytest.raises(grpc.RpcError) as e2:
                    for m in stubs.server_stream(msg(text="s", count=50, delay_ms=200)):
                        out.append(m.text)
                assert e2.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                return out

            got = await asyncio.to_thread(stream)
    assert got and got[0] == "s-0" and len(got) < 50


async def test_cancelled_client_stream_cancels_upstream(echo: EchoServer) -> None:
    async with run_gateway(gateway_config(echo.url)) as gw:
        with channel(gw.port) as ch:
            stubs = Stubs(ch)

            def run() -> str:
                it = stubs.server_stream(msg(text="c", count=1000, delay_ms=50))
                first = next(it).text
                it.cancel()
                return first

            assert await asyncio.to_thread(run) == "c-0"
            # the upstream's call ended as cancelled (RST_STREAM CANCEL reached it)
            assert await asyncio.to_thread(echo.cancelled.wait, 10)


async def test_100_concurrent_streams_share_one_upstream_connection(echo: EchoServer) -> None:
    n = 100
    echo.barrier = threading.Barrier(n)  # every call waits until all 100 are in flight
    # the 100 streams wait for the one connection's handshake: on a loaded 2-core CI machine
    # the threaded grpcio server may take longer than the 2 s default to answer it
    cfg = gateway_config(echo.url, upstream={"timeouts": {"connect": 30}})
    async with run_gateway(cfg) as gw:
        with channel(gw.port) as ch:
            stubs = Stubs(ch)

            def run() -> list[str]:
                # grpcio futures: all 100 calls in flight from one thread
                futs = [stubs.unary.future(msg(text=str(i)), timeout=60) for i in range(n)]
                return [str(f.result().text) for f in futs]

            replies = await asyncio.to_thread(run)
        up = gw.gateway.graph.upstreams["greeter"]
        pool = up.targets[0].extra["h2pool"]
    assert sorted(replies) == sorted(f"echo:{i}" for i in range(n))
    assert len(echo.peers) == 1  # the upstream saw one connection
    assert pool.opened == 1


def test_all_kinds_under_uvloop() -> None:
    """The production loop: uvloop (its transports are not asyncio.Transport subclasses)."""

    async def main() -> None:
        s = EchoServer().start()
        try:
            async with run_gateway(gateway_config(s.url)) as gw:
                with channel(gw.port) as ch:
                    stubs = Stubs(ch)

                    def run() -> list[str]:
                        out = [stubs.unary(msg(text="u"), timeout=10).text]
                        out.append(stubs.client_stream(iter([msg(text="a"), msg(text="b")])).text)
                        out += [m.text for m in stubs.server_stream(msg(text="s", count=2))]
                        out += [m.text for m in stubs.bidi(iter([msg(text="x")]))]
                        return out

                    got = await asyncio.to_thread(run)
        finally:
            await asyncio.to_thread(s.stop)
        assert got == ["echo:u", "a,b", "s-0", "s-1", "re:x"]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
