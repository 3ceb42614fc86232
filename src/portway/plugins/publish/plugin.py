"""``publish``: one event per API call, sent to NATS, Redis Streams, AMQP, a webhook or a
file, off the request path.

``on_log`` (after the last byte, on the task-free path too) builds a dict of the configured
``fields``, renders the destination template and appends both to the sink's bounded buffer
(:class:`~portway.plugins.publish.publisher.Publisher`). Everything else — serialising,
batching, connecting, acknowledgements, retries — happens in the publisher's background task.
Bindings with the same config share one publisher, which survives reloads.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.publish.config import PublishConfig, template_names
from portway.plugins.publish.publisher import Publisher
from portway.plugins.publish.sinks.base import EventSink

Extract = Callable[[RequestContext], Any]


def _time(ctx: RequestContext) -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _ua(ctx: RequestContext) -> str | None:
    v = ctx.request.headers.get_raw(b"user-agent")
    return v.decode("latin-1") if v is not None else None


EXTRACT: dict[str, Extract] = {
    "request_id": lambda c: c.request_id or None,
    "route": lambda c: c.route_name,
    "consumer": lambda c: c.consumer.username if c.consumer is not None else None,
    "status": lambda c: c.response.status if c.response is not None else 499,
    "latency_ms": lambda c: round((time.perf_counter() - c.start) * 1000, 3),
    "upstream": lambda c: c.upstream_name,
    "client_ip": lambda c: c.request.client_ip,
    "bytes_in": lambda c: c.request.body.received if c.request.body is not None else 0,
    "bytes_out": lambda c: c.bytes_out,
    "time": _time,
    "method": lambda c: c.request.method,
    "path": lambda c: c.request.path,
    "host": lambda c: c.request.host,
    "target": lambda c: c.target.id if c.target is not None else None,
    "upstream_latency_ms": lambda c: (
        round(c.upstream_latency * 1000, 3) if c.upstream_latency is not None else None
    ),
    "user_agent": _ua,
}

#: characters that would change a NATS subject's or AMQP key's structure, or a Redis key's
#: hash slot, when they come from a value (a route name, a consumer) rather than the template
_UNSAFE = str.maketrans({c: "_" for c in " \t\r\n*>{}"})


def _token(v: Any) -> str:
    return "-" if v is None or v == "" else str(v).translate(_UNSAFE)


def make_sink(config: PublishConfig, env: PluginEnv) -> EventSink:
    """The client for ``config.sink`` (no I/O: sinks connect on their first batch)."""
    timeout = config.retry.timeout
    if config.sink == "nats":
        from portway.plugins.publish.sinks.nats import NatsSink

        assert config.url is not None
        return NatsSink(config.url, timeout)
    if config.sink == "redis_stream":
        from portway.plugins.publish.sinks.redis_stream import RedisStreamSink
        from portway.state.connect import state_redis_url

        url = config.url or state_redis_url(getattr(env.settings, "state", None))
        return RedisStreamSink(url, timeout, config.stream_max_len)
    if config.sink == "amqp":
        from portway.plugins.publish.sinks.amqp import AmqpSink

        assert config.url is not None
        return AmqpSink(config.url, config.exchange, config.declare, timeout)
    if config.sink == "http":
        from portway.plugins.publish.sinks.http import HttpSink

        assert config.url is not None
        return HttpSink(config.url, config.headers, timeout)
    from portway.plugins.publish.sinks.file import FileSink

    assert config.path is not None
    return FileSink(config.path)


class PublishPlugin(Plugin[PublishConfig]):
    """Emits one event per request (``sample`` of them) with ``fields``; never blocks."""

    name = "publish"
    stage = Stage.edge
    Config = PublishConfig

    def __init__(self, config: PublishConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        if config.sink == "file":
            assert config.path is not None
            # an unwritable path fails the config now, not as a silent retry loop later
            with open(config.path, "ab"):
                pass
        self._fields = [(f, EXTRACT[f]) for f in config.fields]
        tmpl = config.destination
        self._template = tmpl
        self._dest_names = template_names(tmpl) if tmpl else []
        self._sample = config.sample
        key = "publish:" + config.model_dump_json()
        if config.sink == "file":
            key += ":" + os.path.abspath(config.path or "")
        self.publisher: Publisher = env.shared(
            key, lambda: Publisher(config, lambda: make_sink(config, env))
        )
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self.publisher.acquire()

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await self.publisher.release()

    def on_log(self, ctx: RequestContext) -> None:
        if self._sample < 1.0 and random.random() >= self._sample:
            return
        record = {name: fn(ctx) for name, fn in self._fields}
        dest = self._template
        if self._dest_names:
            values = {
                n: _token(record[n] if n in record else EXTRACT[n](ctx)) for n in self._dest_names
            }
            dest = dest.format_map(values)
        self.publisher.put(dest, record)
