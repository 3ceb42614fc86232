"""Configuration of the ``publish`` plugin (events about API calls sent to a broker).

```yaml
- name: publish
  config:
    sink: nats
    url: nats://127.0.0.1:4222
    subject: "api.calls.{route}"
    fields: [request_id, route, consumer, status, latency_ms, upstream, client_ip,
             bytes_in, bytes_out]
    sample: 1.0
    batch: {max_events: 500, max_wait: 200ms}
    buffer: {max_events: 100000, on_full: drop_oldest}
```

Where an event goes, per sink: ``nats`` → ``subject``; ``redis_stream`` → ``stream``;
``amqp`` → ``queue`` (the routing key, on ``exchange``); ``http`` → ``url`` (the webhook);
``file`` → ``path``. ``subject``, ``stream`` and ``queue`` may name event values in braces
(``{route}``, ``{upstream}``, ``{status}``, ...), filled per event.
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from portway.config.types import Duration
from portway.pipeline.plugin import PluginConfig

#: every value an event may carry; ``fields`` picks among them, templates may use any
EVENT_FIELDS: tuple[str, ...] = (
    "request_id",
    "route",
    "consumer",
    "status",
    "latency_ms",
    "upstream",
    "client_ip",
    "bytes_in",
    "bytes_out",
    "time",
    "method",
    "path",
    "host",
    "target",
    "upstream_latency_ms",
    "user_agent",
)
DEFAULT_FIELDS: tuple[str, ...] = EVENT_FIELDS[:9]

Sink = Literal["nats", "redis_stream", "amqp", "http", "file"]


def template_names(template: str) -> list[str]:
    """The ``{name}`` placeholders of a destination template; raises ValueError on a bad one."""
    names: list[str] = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"bad template {template!r}: {e}") from None
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if name not in EVENT_FIELDS:
            raise ValueError(
                f"unknown placeholder {{{name}}} in {template!r}; known: {', '.join(EVENT_FIELDS)}"
            )
        if spec or conv:
            raise ValueError(f"placeholder {{{name}}} in {template!r} takes no format spec")
        names.append(name)
    return names


class BatchConfig(PluginConfig):
    max_events: int = Field(500, ge=1, le=100_000, description="events sent in one batch at most")
    max_wait: Duration = Field(
        0.2, gt=0, le=60, description="the longest an event waits for its batch to fill"
    )


class BufferConfig(PluginConfig):
    max_events: int = Field(
        100_000, ge=1, le=10_000_000, description="events held while a sink is slow or down"
    )
    on_full: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest", description="which event goes when the buffer is full (both are counted)"
    )


class RetryConfig(PluginConfig):
    initial: Duration = Field(0.1, gt=0, description="first wait after a failed batch")
    max: Duration = Field(5.0, gt=0, description="cap of the doubling wait between retries")
    timeout: Duration = Field(5.0, gt=0, description="one batch's send (and ack) deadline")


class PublishConfig(PluginConfig):
    sink: Sink = Field(description="nats | redis_stream | amqp | http | file")
    url: str | None = Field(
        None,
        description="nats://, redis:// or amqp:// server URL; for http the webhook URL",
    )
    subject: str | None = Field(None, description="nats: subject template")
    stream: str | None = Field(None, description="redis_stream: stream key template")
    stream_max_len: int | None = Field(
        None, ge=1, description="redis_stream: approximate MAXLEN trimming (none: no trim)"
    )
    queue: str | None = Field(None, description="amqp: routing key template (the queue name)")
    exchange: str = Field(
        "", description="amqp: exchange to publish to; '' is the default exchange"
    )
    declare: bool = Field(
        True, description="amqp with the default exchange: declare each (durable) queue once"
    )
    path: str | None = Field(None, description="file: JSON-lines file appended to")
    headers: dict[str, str] = Field(
        default_factory=dict, description="http: extra request headers (e.g. authorization)"
    )
    fields: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FIELDS), description="event fields, in order"
    )
    sample: float = Field(1.0, ge=0.0, le=1.0, description="share of requests that emit an event")
    batch: BatchConfig = Field(default_factory=lambda: BatchConfig())
    buffer: BufferConfig = Field(default_factory=lambda: BufferConfig())
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig())

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("fields needs at least one field")
        for f in v:
            if f not in EVENT_FIELDS:
                raise ValueError(f"unknown field {f!r}; known: {', '.join(EVENT_FIELDS)}")
        if len(set(v)) != len(v):
            raise ValueError("fields lists a field twice")
        return v

    @field_validator("subject", "stream", "queue")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None:
            if not v:
                raise ValueError("must not be empty")
            template_names(v)
        return v

    @model_validator(mode="after")
    def _per_sink(self) -> PublishConfig:
        need: dict[str, tuple[str, ...]] = {
            "nats": ("url", "subject"),
            "redis_stream": ("stream",),
            "amqp": ("url", "queue"),
            "http": ("url",),
            "file": ("path",),
        }
        missing = [k for k in need[self.sink] if getattr(self, k) is None]
        if missing:
            raise ValueError(f"sink {self.sink} needs {' and '.join(missing)}")
        schemes = {
            "nats": ("nats://", "tls://"),
            "redis_stream": ("redis://", "rediss://", "unix://"),
            "amqp": ("amqp://", "amqps://"),
            "http": ("http://", "https://"),
        }
        ok = schemes.get(self.sink)
        if ok is not None and self.url is not None and not self.url.startswith(ok):
            raise ValueError(f"url of sink {self.sink} must start with {' or '.join(ok)}")
        return self

    @property
    def destination(self) -> str:
        """The destination template of the configured sink ('' for http and file)."""
        return {"nats": self.subject, "redis_stream": self.stream, "amqp": self.queue}.get(
            self.sink
        ) or ""
