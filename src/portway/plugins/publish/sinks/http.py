"""Webhook sink: each batch is one ``POST`` of a JSON array, sent with the gateway's own
HTTP client (``portway.http.client.simple_request``, a fresh connection per batch).

A 2xx answer means delivered. 408, 429 and 5xx (and connection failures) are outages,
retried with the publisher's backoff; any other status is a refusal of the batch for good
(a bad URL or credentials would fail every retry), dropped and counted as ``rejected``.
"""

from __future__ import annotations

from collections.abc import Sequence

from portway.plugins.publish.sinks.base import EventSink, Item, RejectedError, SinkError

RETRYABLE = frozenset({408, 425, 429})


class HttpSink(EventSink):
    kind = "http"

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        self.url = url
        self.headers = [("content-type", "application/json"), *headers.items()]
        self.timeout = timeout

    async def send(self, batch: Sequence[Item]) -> None:
        from portway.http.client import simple_request

        body = b"[" + b",".join(p for _, p, _ in batch) + b"]"
        try:
            r = await simple_request(
                "POST", self.url, headers=self.headers, body=body, timeout=self.timeout
            )
        except Exception as e:
            raise SinkError(f"http: POST {self.url}: {type(e).__name__}: {e}") from e
        if 200 <= r.status < 300:
            return
        if r.status >= 500 or r.status in RETRYABLE:
            raise SinkError(f"http: POST {self.url} answered {r.status}")
        raise RejectedError(f"POST {self.url} answered {r.status}: {r.body[:200]!r}")
