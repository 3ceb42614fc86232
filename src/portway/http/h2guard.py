"""HTTP/2 protocol guards under :class:`~portway.http.h2.H2Connection`: frame-level limits and
stream-level errors, kept apart from the connection's request/response handling.

* :class:`EagerFrameBuffer` refuses an oversized frame from its header and bounds CONTINUATION
  floods (frame count and header-block bytes);
* :class:`ServerH2` is h2's connection with malformed requests kept to their stream and the
  rapid-reset, PING and SETTINGS flood limits counted per frame, before h2 answers them; its
  streams leave the Host/:authority comparison to ``http/streamreq.py`` (:class:`_Stream`).

Every limit ends the connection with GOAWAY(ENHANCE_YOUR_CALM): a
:class:`h2.exceptions.DenialOfServiceError` raised inside ``receive_data``, for which h2 queues
the GOAWAY and drops the events of that read (no stream of a flood gets a task).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.stream
import h2.utilities
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

# the abuse limits are shared with the libnghttp2 engine (http/ng2.py)
from portway.http.h2engine import (
    CONTROL_BURST,
    CONTROL_PER_SECOND,
    MAX_CONTINUATIONS,
    PREMATURE_RESETS,
)

__all__ = [
    "CONTROL_BURST",
    "CONTROL_PER_SECOND",
    "MAX_CONTINUATIONS",
    "PREMATURE_RESETS",
    "EagerFrameBuffer",
    "ServerH2",
    "goaway_bytes",
]


class EagerFrameBuffer(h2.frame_buffer.FrameBuffer):
    """Refuses an oversized frame from its header: h2 alone would first buffer all of it
    (up to 16 MiB per connection) before answering FRAME_SIZE_ERROR. Bounds CONTINUATION
    floods by frame count and by the bytes of the header block being assembled."""

    max_header_block = 64 * 1024

    def __next__(self) -> Any:
        if len(self._data) >= 9:
            length = int.from_bytes(self._data[:3], "big")
            self._validate_frame_length(length)
            if self._data[3] == 0x4 and self._data[4] & 0x1 and length:
                # RFC 9113 §6.5: a SETTINGS ACK with a payload is a FRAME_SIZE_ERROR (h2
                # would answer PROTOCOL_ERROR: hyperframe calls it invalid data)
                raise h2.exceptions.FrameDataMissingError("SETTINGS ACK with a payload")
        return super().__next__()

    def _update_header_buffer(self, f: Any) -> Any:
        pending = self._headers_buffer
        if pending and isinstance(f, ContinuationFrame):
            size = sum(len(x.data) for x in pending) + len(f.data)
            if len(pending) >= MAX_CONTINUATIONS or size > self.max_header_block:
                raise h2.exceptions.DenialOfServiceError("CONTINUATION flood")
        return super()._update_header_buffer(f)


#: h2 raises exactly these for a malformed request on one stream (bad or missing
#: pseudo-headers, forbidden fields, a body that contradicts Content-Length)
_STREAM_LEVEL = (h2.exceptions.ProtocolError, h2.exceptions.InvalidBodyLengthError)


class _CompressionError(h2.exceptions.ProtocolError):
    """A header block HPACK could not decode: the connection ends with GOAWAY carrying this
    code (h2's ``receive_data`` sends the ``error_code`` of what it catches)."""

    error_code = h2.errors.ErrorCodes.COMPRESSION_ERROR


class _Stream(h2.stream.H2Stream):
    """h2's stream, its request's Host fields kept from h2's checks when an :authority is
    there too: h2 compares the two byte for byte and resets the stream; the rule every
    engine applies (``streamreq.build_request``: RFC 3986 normalization, one Host, a JSON
    400) judges them instead, and ``streamreq.check_head`` their bytes. h2 still sees a Host
    without :authority (its "one of the two" rule)."""

    def _process_received_headers(
        self,
        headers: Iterable[Any],
        header_validation_flags: h2.utilities.HeaderValidationFlags,
        header_encoding: bool | str | None,
    ) -> list[Any]:
        f = header_validation_flags
        if not (f.is_trailer or f.is_response_header) and isinstance(headers, list):
            authority = False
            last_pseudo = first_host = -1
            for i, (name, _) in enumerate(headers):
                if name.startswith(b":"):
                    last_pseudo = i
                    authority = authority or name == b":authority"
                elif first_host < 0 and name == b"host":
                    first_host = i
            # (a Host before a pseudo-header stays: h2 refuses that order, as nghttp2 does)
            if authority and first_host > last_pseudo:
                rest = headers[:first_host]
                hosts: list[Any] = []
                for h in headers[first_host:]:
                    (hosts if h[0] == b"host" else rest).append(h)
                checked = super()._process_received_headers(rest, f, header_encoding)
                return checked + hosts
        return super()._process_received_headers(headers, f, header_encoding)


class ServerH2(h2.connection.H2Connection):
    """h2's connection with malformed requests kept to their stream, and flood limits.

    RFC 9113 §8.1.1: a malformed request is a stream error (RST_STREAM PROTOCOL_ERROR); h2
    makes every one a connection error, which would fail the client's other streams too.
    Errors that leave shared state unusable (HPACK decoding, flow control, frame sizes,
    stream-id order, floods) stay connection errors.

    Floods are counted per frame, before h2 answers them, and end the connection with
    GOAWAY(ENHANCE_YOUR_CALM) (a :class:`h2.exceptions.DenialOfServiceError`): PING and
    SETTINGS beyond a token bucket, and client resets of unfinished streams beyond
    ``PREMATURE_RESETS`` when they are the majority of the streams opened (rapid reset).
    """

    clock: Any = None
    control_at = 0.0
    control_tokens = CONTROL_BURST
    opened = 0
    premature_resets = 0

    def _begin_new_stream(
        self, stream_id: int, allowed_ids: h2.connection.AllowedStreamIDs
    ) -> h2.stream.H2Stream:
        s = super()._begin_new_stream(stream_id, allowed_ids)
        s.__class__ = _Stream  # (h2 names the class it makes: no hook to pass ours)
        return s

    # A PING or SETTINGS that follows response HEADERS or DATA is the peer at work, not a
    # flood: gRPC clients send one per round trip while data flows (BDP estimation), and
    # gRPC servers forgive pings once they have sent HEADERS or DATA (gRFC A8). Sending
    # either refills the bucket; only control frames with no response traffic between
    # them can empty it.
    def send_headers(self, *args: Any, **kwargs: Any) -> None:
        self.control_tokens = CONTROL_BURST
        super().send_headers(*args, **kwargs)

    def send_data(self, *args: Any, **kwargs: Any) -> None:
        self.control_tokens = CONTROL_BURST
        super().send_data(*args, **kwargs)

    def _receive_frame(self, frame: Any) -> list[h2.events.Event]:
        if isinstance(frame, HeadersFrame):
            if frame.stream_id not in self.streams:
                self.opened += 1
        elif isinstance(frame, RstStreamFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None and not stream.closed:
                self.premature_resets += 1
                n = self.premature_resets
                if n > PREMATURE_RESETS and 2 * n > self.opened:
                    raise h2.exceptions.DenialOfServiceError("rapid reset flood")
        elif isinstance(frame, PingFrame | SettingsFrame) and "ACK" not in frame.flags:
            self._spend_control_token(type(frame).__name__)
        try:
            return super()._receive_frame(frame)
        except h2.exceptions.ProtocolError as e:
            if str(e).startswith("Error decoding header block"):
                # RFC 9113 §4.3: an HPACK decoding error is a COMPRESSION_ERROR (h2 says
                # PROTOCOL_ERROR)
                raise _CompressionError(str(e)) from e
            sid = getattr(frame, "stream_id", 0)
            stream = self.streams.get(sid) if sid else None
            if (
                type(e) not in _STREAM_LEVEL
                or not isinstance(frame, HeadersFrame | DataFrame)
                or stream is None
                or stream.closed
            ):
                raise
            code = h2.errors.ErrorCodes.PROTOCOL_ERROR
            self._prepare_for_sending(stream.reset_stream(code))
            return [h2.events.StreamReset(stream_id=sid, error_code=code, remote_reset=False)]

    def _spend_control_token(self, kind: str) -> None:
        now = self.clock() if self.clock is not None else 0.0
        tokens = min(
            CONTROL_BURST, self.control_tokens + (now - self.control_at) * CONTROL_PER_SECOND
        )
        self.control_at = now
        if tokens < 1.0:
            raise h2.exceptions.DenialOfServiceError(f"{kind} flood")
        self.control_tokens = tokens - 1.0


def goaway_bytes(code: int = 1) -> bytes:
    """A SETTINGS + GOAWAY(``code``, last stream 0) pair for a client whose bytes began as an
    HTTP/2 preface and then went wrong (default: PROTOCOL_ERROR)."""
    goaway = GoAwayFrame(0)
    goaway.last_stream_id = 0
    goaway.error_code = code
    return b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + goaway.serialize()
