"""The task-free exchange on an HTTP/2 stream: :class:`StreamExchange` relays an upstream
response through the stream's response-writer interface (``send_head``/``send_body``/
``send_end``, ``http/ng2stream.py``) instead of HTTP/1.1 bytes.

Everything but the writing is :class:`~portway.proxy.fastexchange.FastExchange`'s own: the
upstream parser's callbacks, the retry/breaker/health bookkeeping, the response hooks, the
hand-over to a task (:class:`Resumed`, which a stream runs in a task of its own), the
endings. The header rules are the general path's: the relayed fields are those
``FastExchange`` builds (``relay.response_header_items``/``add_response_framing``), and the
stream applies ``relay.stream_fields`` (lower-case names, no connection-specific field) and
``head_ends_stream`` (HEAD, 204, 304, Content-Length: 0) exactly as for a response the task
writes. Chunked framing has no meaning on a stream: the body goes out as DATA as it comes,
trailers as a trailing HEADERS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from portway.http.headers import Headers
from portway.http.memo import remember
from portway.http.models import Request, Response
from portway.http.relay import FRAMING, informational_items, no_body, without_framing
from portway.proxy.fastexchange import FastExchange

if TYPE_CHECKING:
    from portway.http.serverapi import FastConn

#: what a relayed head's runs of lines are split on
_CRLF: Final = b"\r\n"


#: a relayed line's field (upstreams repeat most of their lines: a lookup is cheaper than
#: the partition and strip); bounded, cleared when full
_LINES: Final[dict[bytes, tuple[bytes, bytes]]] = {}
_LINES_SIZE: Final = 1024
_LINE_MAX: Final = 128


def split_runs(runs: list[bytes], items: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``runs`` of whole ``name: value CRLF`` lines (as llhttp validated them, see
    ``ResponseSink.on_head_raw``) as fields, then ``items``: the order the head is sent in."""
    out: list[tuple[bytes, bytes]] = []
    lines = _LINES
    for run in runs:
        for line in run.split(_CRLF):
            if line:
                kv = lines.get(line)
                if kv is None:
                    k, _, v = line.partition(b":")
                    kv = (k, v.strip(b" \t"))
                    if len(line) <= _LINE_MAX:
                        remember(lines, line, kv, _LINES_SIZE)
                out.append(kv)
    out.extend(items)
    return out


def answer_stream(conn: FastConn, req: Request, resp: Response, body: bytes) -> tuple[int, bool]:
    """A request hook's whole answer ``resp`` (``body`` after the chunk hooks) on a stream:
    what ``fastlines.answer_bytes`` writes on HTTP/1.1 and ``handler.ProxyApp._send`` on a
    stream — its fields (a prebuilt head's lines, :meth:`Response.set_raw_fields`, split)
    without framing ones, Content-Length unless the status or method has no body, the body
    unless it has none. Returns (head size, bodiless)."""
    status = resp.status
    empty = no_body(req.method, status)
    raw = resp.raw_fields()
    if raw is not None:
        runs, extra = raw
        items = split_runs(runs, [kv for kv in extra if kv[0] not in FRAMING])
    else:
        items = without_framing(resp.headers.raw())
    if not empty or req.method == "HEAD":
        items.append((b"content-length", str(len(body)).encode()))
    size = conn.send_head(
        status, resp.reason, items, "none" if empty else "length", b"" if empty else body, True
    )
    conn.send_end(None)
    return size, empty


class StreamExchange(FastExchange):
    """:class:`FastExchange` writing to an HTTP/2 stream. The head waits (``status``,
    ``reason``, ``fields``) until ``settle``, which submits it with the body bytes of the
    same batch (one HEADERS, and DATA as the peer's windows allow); later batches are
    ``send_body``, the end ``send_end`` (with the upstream's trailers)."""

    __slots__ = ("fields", "reason", "status", "submitted")

    def _emit_head(
        self,
        status: int,
        reason: bytes,
        runs: list[bytes],
        items: list[tuple[bytes, bytes]],
        mode: str,
    ) -> None:
        self.status = status
        self.reason = reason
        # (the stream adds Alt-Svc itself, as for every response head it sends)
        self.fields = split_runs(runs, items) if runs else items
        self.submitted = False
        self.mode = mode
        self.chunked_out = False  # DATA frames: no chunk framing
        self.head_sent = True

    def on_info(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if status == 103 and not self.head_sent:
            # a HEADERS frame of its own: nghttp2 queues it ahead of the final head
            self.conn.send_info(103, reason, informational_items(headers))

    def settle(self) -> None:
        if self.done:
            return
        if self.pending is not None:
            self._fall_back(self.pending)
            return
        conn = self.conn
        out = self.out
        if conn.closed:
            out.clear()
            self._abort_client()
            return
        if not self.head_sent:
            return  # nothing to relay yet (a 1xx, or a head still arriving)
        ended = self.ended
        trailers = self.trailers
        try:
            if not self.submitted:
                self.submitted = True
                body = b"" if not out else out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                self.ctx.bytes_out += conn.send_head(
                    self.status, self.reason, self.fields, self.mode, body, ended and not trailers
                )
            elif out:
                conn.send_body(out[0] if len(out) == 1 else b"".join(out))
                out.clear()
            if ended:
                conn.send_end(Headers(trailers) if trailers else None)
        except ConnectionError:  # the stream was reset meanwhile
            out.clear()
            self._abort_client()
            return
        # what the stream's write did not need (``FastExchange._admit``)
        self._after_write()
        if ended:
            self._end(True, notify=True)
            return
        w = conn._can_write
        if w is not None and not self.paused:
            # the DATA wait for the peer's windows (the stream's queue) or the connection's
            # transport is full: stop reading the upstream until that future is done
            self.paused = True
            t = self.uconn.transport
            if t is not None:
                t.pause_reading()
            w.add_done_callback(self._resume)

    def _abort_client(self) -> None:
        # the stream's reset tells its exchange (``client_lost``): this one ends here
        self.conn.exchange = None
        self.conn.abort()
        self._end(False, notify=False)


__all__ = ["StreamExchange", "answer_stream", "split_runs"]
