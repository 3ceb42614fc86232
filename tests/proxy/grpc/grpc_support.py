"""A real grpcio Echo server (stubs generated from ``echo.proto`` at test time) and helpers.

The server is grpcio's threaded server: it runs beside the test's event loop, and the
grpcio client calls run in threads (``asyncio.to_thread``) so the gateway's loop is free.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import grpc

HERE = Path(__file__).parent
_compiled: dict[tuple[Path, tuple[str, ...], bool], list[ModuleType]] = {}
_lock = threading.Lock()


def compile_protos(
    include: Path, protos: list[Path], modules: list[str], grpc_stubs: bool = False
) -> list[ModuleType]:
    """``modules`` imported after ``grpc_tools.protoc`` compiled ``protos`` (found under
    ``include``) into a temporary directory put on ``sys.path`` — once per set."""
    key = (include, tuple(modules), grpc_stubs)
    with _lock:
        if key not in _compiled:
            out = tempfile.mkdtemp(prefix="portway-grpc-")
            stubs = [f"--grpc_python_out={out}"] if grpc_stubs else []
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "grpc_tools.protoc",
                    f"-I{include}",
                    f"--python_out={out}",
                    *stubs,
                    *(str(p) for p in protos),
                ],
                check=True,
            )
            sys.path.insert(0, out)
            _compiled[key] = [importlib.import_module(m) for m in modules]
        return _compiled[key]


def echo_pb2() -> ModuleType:
    """``echo_pb2`` compiled by ``grpc_tools.protoc`` into a temporary directory (once)."""
    return compile_protos(HERE, [HERE / "echo.proto"], ["echo_pb2"])[0]


SERVICE = "portway.test.Echo"


class GrpcioServer:
    """A threaded grpcio server's start, stop and URL (``_server`` and ``port`` are set by
    the subclass)."""

    _server: grpc.Server
    port: int

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0).wait(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class EchoServer(GrpcioServer):
    """The Echo service on a threaded grpcio server. ``peers`` records the client address of
    every call (one upstream connection = one peer); ``cancelled`` is set when a call's
    client went away."""

    def __init__(self, port: int = 0, workers: int = 16) -> None:
        self.pb = echo_pb2()
        self.peers: set[str] = set()
        self.calls = 0
        self.cancelled = threading.Event()
        self.first_sent = threading.Event()
        self.barrier: threading.Barrier | None = None
        self.received_bytes = 0
        self.seen_timeout: float | None = None
        self.metadata: list[tuple[str, str]] = []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers),
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        self._server.add_generic_rpc_handlers((self._handlers(),))
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")

    def _note(self, ctx: grpc.ServicerContext) -> None:
        self.peers.add(ctx.peer())
        self.calls += 1
        self.metadata = list(ctx.invocation_metadata())
        self.seen_timeout = ctx.time_remaining()
        ctx.add_callback(self._on_done(ctx))

    def _on_done(self, ctx: grpc.ServicerContext) -> Any:
        def done() -> None:
            if ctx.is_active() is False and not getattr(ctx, "_portway_ok", False):
                self.cancelled.set()

        return done

    def _handlers(self) -> grpc.GenericRpcHandler:
        pb = self.pb
        Msg = pb.Msg

        def unary(req: Any, ctx: grpc.ServicerContext) -> Any:
            self._note(ctx)
            if self.barrier is not None:
                self.barrier.wait(30)
            if req.delay_ms:
                time.sleep(req.delay_ms / 1000)
            if req.count:
                ctx.abort(grpc.StatusCode(_code(req.count)), f"failed: {req.text}")
            ctx.set_trailing_metadata((("x-trailer", "t-" + req.text),))
            ctx._portway_ok = True  # type: ignore[attr-defined]
            return Msg(text="echo:" + req.text, data=req.data)

        def client_stream(it: Iterator[Any], ctx: grpc.ServicerContext) -> Any:
            self._note(ctx)
            texts: list[str] = []
            total = 0
            for m in it:
                texts.append(m.text)
                total += len(m.data)
            self.received_bytes = total
            ctx._portway_ok = True  # type: ignore[attr-defined]
            return Msg(text=",".join(texts), count=total)

        def server_stream(req: Any, ctx: grpc.ServicerContext) -> Iterator[Any]:
            self._note(ctx)
            for i in range(req.count):
                if req.delay_ms and i:
                    time.sleep(req.delay_ms / 1000)
                yield Msg(text=f"{req.text}-{i}", data=b"x" * req.size)
                self.first_sent.set()
            ctx._portway_ok = True  # type: ignore[attr-defined]

        def bidi(it: Iterator[Any], ctx: grpc.ServicerContext) -> Iterator[Any]:
            self._note(ctx)
            for m in it:
                yield Msg(text="re:" + m.text, data=m.data)
            ctx._portway_ok = True  # type: ignore[attr-defined]

        ser = Msg.SerializeToString
        de = Msg.FromString
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(unary, de, ser),
                "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, de, ser),
                "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, de, ser),
                "Bidi": grpc.stream_stream_rpc_method_handler(bidi, de, ser),
            },
        )


def _code(n: int) -> tuple[int, str]:
    for c in grpc.StatusCode:
        if c.value[0] == n:
            return c.value  # type: ignore[no-any-return]
    return grpc.StatusCode.UNKNOWN.value  # type: ignore[no-any-return]


class Stubs:
    """Client callables for the four methods on ``channel``."""

    def __init__(self, channel: grpc.Channel) -> None:
        pb = echo_pb2()
        ser = pb.Msg.SerializeToString
        de = pb.Msg.FromString
        p = f"/{SERVICE}/"
        self.unary = channel.unary_unary(p + "Unary", ser, de)
        self.client_stream = channel.stream_unary(p + "ClientStream", ser, de)
        self.server_stream = channel.unary_stream(p + "ServerStream", ser, de)
        self.bidi = channel.stream_stream(p + "Bidi", ser, de)


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 0),
        ],
    )


def gateway_config(upstream_url: str, **extra: Any) -> dict[str, Any]:
    """An h2c upstream ``greeter`` and a route for the Echo service."""
    route: dict[str, Any] = {
        "name": "grpc-pass",
        "match": {"paths": [f"/{SERVICE}/"]},
        "upstream": "greeter",
    }
    route.update(extra.pop("route", {}))
    up: dict[str, Any] = {"protocol": "h2c", "targets": [{"url": upstream_url}]}
    up.update(extra.pop("upstream", {}))
    cfg: dict[str, Any] = {"upstreams": {"greeter": up}, "routes": [route]}
    cfg.update(extra)
    return cfg
