"""One gRPC call on the wire (h2c prior knowledge, the ``h2`` library): what grpcio hides
from its callers, ``grpc-encoding`` and each message's compressed flag, which the interop
spec's compression cases check ("the response MUST have the compressed message flag set")."""

from __future__ import annotations

import asyncio
import gzip
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class WireReply:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    messages: list[tuple[int, bytes]] = field(default_factory=list)  # (flag, decoded message)
    trailers: dict[bytes, bytes] = field(default_factory=dict)


def frame(message: bytes, compress: bool = False) -> bytes:
    """A gRPC length-prefixed message (gzip when ``compress``)."""
    body = gzip.compress(message) if compress else message
    return struct.pack(">BI", 1 if compress else 0, len(body)) + body


def _messages(data: bytes, encoding: bytes | None) -> list[tuple[int, bytes]]:
    out = []
    while data:
        flag, n = struct.unpack(">BI", data[:5])
        body, data = data[5 : 5 + n], data[5 + n :]
        if flag:
            assert encoding == b"gzip", encoding  # a compressed message needs its encoding
            body = gzip.decompress(body)
        out.append((flag, body))
    return out


async def grpc_call(
    port: int,
    path: str,
    body: bytes,
    extra: list[tuple[bytes, bytes]],
    timeout: float = 30,
    end: bool = True,
) -> WireReply:
    """The call's reply; ``end=False`` leaves the request open (a client still sending)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"127.0.0.1:%d" % port),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *extra,
    ]
    conn.send_headers(1, headers)
    step = conn.max_outbound_frame_size  # small requests: within the default windows
    for i in range(0, len(body), step):
        conn.send_data(1, body[i : i + step], end_stream=end and i + step >= len(body))
    writer.write(conn.data_to_send())
    reply = WireReply()
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                assert chunk, "connection closed before the call ended"
                ended = False
                for ev in conn.receive_data(chunk):
                    if isinstance(ev, h2.events.ResponseReceived):
                        reply.headers = dict(ev.headers)
                    elif isinstance(ev, h2.events.DataReceived):
                        data += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        reply.trailers = dict(ev.headers)
                    elif isinstance(ev, h2.events.StreamEnded):
                        ended = True
                    elif isinstance(ev, h2.events.StreamReset) and not (
                        ended and ev.error_code == 0  # after the response: "stop sending"
                    ):
                        raise AssertionError(f"stream reset: {ev.error_code!r}")
                writer.write(conn.data_to_send())
                if ended:
                    break
    finally:
        writer.close()
    reply.messages = _messages(data, reply.headers.get(b"grpc-encoding"))
    return reply
