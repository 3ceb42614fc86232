"""Active health probes over HTTP/2, for upstreams spoken to with ``protocol: h2c`` or ``h2``.

A gRPC server resets an HTTP/1.1 request (and an HTTP/2 ``GET`` without the gRPC content
type), so the HTTP/1.1 probe of :mod:`portway.upstream.health` marked every h2c-only target
down. :class:`H2Probe` sends the probe on its own HTTP/2 connection per target (kept open
between probes, like Envoy's health-check connections):

- ``health.active.grpc_service`` unset: ``GET <path>`` and the status must be one of
  ``expect_status`` (any HTTP/2 server);
- ``grpc_service`` set (``""`` asks for the server's overall health): the standard gRPC
  health protocol, ``grpc.health.v1.Health/Check``; healthy when the answer is
  ``SERVING`` with ``grpc-status: 0`` (a server without the health service answers
  UNIMPLEMENTED: unhealthy, as in Envoy).

Messages are encoded by protobuf from a descriptor built here (the two messages of
``grpc/health/v1/health.proto``), never by hand.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from portway.http.h2client import H2Pool, H2UpstreamError, client_ssl_context

if TYPE_CHECKING:
    from portway.config.schema import ActiveHealthConfig
    from portway.upstream.target import Target

log = logging.getLogger("portway.health")

_CHECK_PATH = b"/grpc.health.v1.Health/Check"
_SERVING = 1
_messages: tuple[Any, Any] | None = None


def _health_messages() -> tuple[Any, Any]:
    """``(HealthCheckRequest, HealthCheckResponse)`` classes, built once."""
    global _messages
    if _messages is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        fd = descriptor_pb2.FileDescriptorProto(
            name="portway/grpc_health_v1.proto", package="grpc.health.v1", syntax="proto3"
        )
        req = fd.message_type.add(name="HealthCheckRequest")
        req.field.add(name="service", number=1, type=9, label=1)  # string
        resp = fd.message_type.add(name="HealthCheckResponse")
        resp.field.add(name="status", number=1, type=5, label=1)  # int32 (the enum's wire form)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fd)
        _messages = (
            message_factory.GetMessageClass(
                pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")
            ),
            message_factory.GetMessageClass(
                pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")
            ),
        )
    return _messages


class H2Probe:
    """The probe callable of a :class:`~portway.upstream.health.HealthChecker` for HTTP/2
    upstreams; ``close()`` closes its connections."""

    def __init__(self, cfg: ActiveHealthConfig, tls: bool) -> None:
        self.cfg = cfg
        self.tls = tls
        self._pools: dict[str, H2Pool] = {}

    def _pool(self, t: Target) -> H2Pool:
        pool = self._pools.get(t.id)
        if pool is None or pool.closed_pool:
            ctx = client_ssl_context(["h2"]) if self.tls else None
            pool = self._pools[t.id] = H2Pool(t.host, t.port, ctx, 3600.0)
        return pool

    async def __call__(self, t: Target) -> bool:
        a = self.cfg
        base = [
            (b":scheme", b"https" if self.tls else b"http"),
            (b":authority", f"{t.host}:{t.port}".encode("latin-1")),
            (b"user-agent", b"portway-health-check"),
        ]
        try:
            if a.grpc_service is None:
                s = await self._pool(t).open_stream(
                    [(b":method", b"GET"), (b":path", a.path.encode("latin-1")), *base],
                    True,
                    a.timeout,
                )
                status, _ = await s.head
                s.cancel()
                return status in a.expect_status
            request_cls, response_cls = _health_messages()
            msg = request_cls(service=a.grpc_service).SerializeToString()
            s = await self._pool(t).open_stream(
                [
                    (b":method", b"POST"),
                    (b":path", _CHECK_PATH),
                    *base,
                    (b"content-type", b"application/grpc"),
                    (b"te", b"trailers"),
                ],
                False,
                a.timeout,
            )
            await s.send(b"\x00" + len(msg).to_bytes(4, "big") + msg, end=True)
            status, headers = await s.head
            body = await s.body.read_all(64 * 1024)
            trailers = s.body.trailers
            grpc_status = headers.get("grpc-status") or (
                trailers.get("grpc-status") if trailers is not None else None
            )
            if status != 200 or grpc_status != "0" or len(body) < 5:
                return False
            reply = response_cls()
            reply.ParseFromString(body[5 : 5 + int.from_bytes(body[1:5], "big")])
            return int(reply.status) == _SERVING
        except (H2UpstreamError, OSError, TimeoutError, ValueError) as e:
            log.debug("h2 probe of %s failed: %r", t.id, e)
            return False

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
