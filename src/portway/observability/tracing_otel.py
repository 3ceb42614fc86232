"""The OpenTelemetry-backed :class:`OtelTracer` (see :mod:`portway.observability.tracing`,
whose :func:`~portway.observability.tracing.build_tracer` imports this module only when the
config enables tracing)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from portway.config.tracing import TracingConfig
from portway.http.headers import Headers
from portway.observability.tracing import (
    _ATTEMPT_SPAN,
    _REQUEST_SPAN,
    Tracer,
    log,
    parse_b3,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from portway.pipeline.context import RequestContext


class _HeadersGetter(Getter[Headers]):
    """OpenTelemetry ``Getter`` over :class:`~portway.http.headers.Headers`."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        vals = carrier.get_all(key)
        return vals or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in carrier]


class _ListSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


_GETTER = _HeadersGetter()
_SETTER = _ListSetter()


def _epoch_ns(perf_start: float) -> int:
    return time.time_ns() - int((time.perf_counter() - perf_start) * 1e9)


class OtelTracer(Tracer):
    """Tracer backed by an OpenTelemetry SDK ``TracerProvider`` private to this instance (the
    global provider is left alone, so reloads can swap tracers)."""

    enabled = True

    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        import portway

        self.config = config
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(
                endpoint=config.endpoint, headers=dict(config.headers), timeout=config.timeout
            )
        attrs: dict[str, str] = {
            "service.name": config.service_name,
            "service.version": portway.__version__,
            **config.resource_attributes,
        }
        self._provider: TracerProvider = TracerProvider(
            resource=Resource.create(attrs),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        self._exporter = exporter
        self._provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=config.max_queue_size,
                schedule_delay_millis=config.schedule_delay * 1000,
                max_export_batch_size=min(config.max_export_batch_size, config.max_queue_size),
                export_timeout_millis=config.timeout * 1000,
            )
        )
        self._tracer = self._provider.get_tracer("portway", portway.__version__)
        self._w3c = TraceContextTextMapPropagator()
        self._formats = tuple(config.propagation)
        self._closed = False

    # --- context propagation -----------------------------------------------------------------
    def extract(self, headers: Headers) -> Context | None:
        """The remote parent from the first configured format present in ``headers``."""
        for fmt in self._formats:
            if fmt == "tracecontext":
                if headers.get("traceparent") is None:
                    continue
                c = self._w3c.extract(headers, getter=_GETTER)
                if trace.get_current_span(c).get_span_context().is_valid:
                    return c
            else:
                b3 = parse_b3(headers)
                if b3 is not None:
                    tid, sid, sampled = b3
                    sc = SpanContext(
                        tid,
                        sid,
                        is_remote=True,
                        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0),
                    )
                    return trace.set_span_in_context(NonRecordingSpan(sc))
        return None

    def inject(self, span: Span) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        sc = span.get_span_context()
        if not sc.is_valid:
            return out
        tid, sid = f"{sc.trace_id:032x}", f"{sc.span_id:016x}"
        sampled = "1" if sc.trace_flags.sampled else "0"
        for fmt in self._formats:
            if fmt == "tracecontext":
                self._w3c.inject(out, context=trace.set_span_in_context(span), setter=_SETTER)
            elif fmt == "b3":
                out.append(("b3", f"{tid}-{sid}-{sampled}"))
            else:
                out += [("x-b3-traceid", tid), ("x-b3-spanid", sid), ("x-b3-sampled", sampled)]
        return out

    # --- request lifecycle ---------------------------------------------------------------------
    def start_request(self, ctx: RequestContext) -> None:
        if self._closed or _REQUEST_SPAN in ctx.state:
            return
        req = ctx.request
        attrs: dict[str, str | int] = {
            "http.request.method": req.method,
            "url.path": req.path,
            "url.scheme": req.scheme,
            "network.protocol.version": req.version,
        }
        if req.query:
            attrs["url.query"] = req.query.decode("latin-1")
        if req.host:
            attrs["server.address"] = req.host
        if req.client_ip:
            attrs["client.address"] = req.client_ip
        ua = req.headers.get("user-agent")
        if ua is not None:
            attrs["user_agent.original"] = ua
        if ctx.request_id:
            attrs["portway.request_id"] = ctx.request_id
        span = self._tracer.start_span(
            req.method,
            context=self.extract(req.headers),
            kind=SpanKind.SERVER,
            attributes=attrs,
            start_time=_epoch_ns(ctx.start),
        )
        ctx.state[_REQUEST_SPAN] = span

    def _parent(self, ctx: RequestContext) -> Context | None:
        span = ctx.state.get(_REQUEST_SPAN)
        return trace.set_span_in_context(span) if span is not None else None

    def start_phase(self, ctx: RequestContext, plugin: str, phase: str) -> Any:
        parent = self._parent(ctx)
        if parent is None:
            return None
        return self._tracer.start_span(
            f"{plugin} {phase}",
            context=parent,
            attributes={"portway.plugin": plugin, "portway.phase": phase},
        )

    def end_phase(self, token: Any, error: BaseException | None = None) -> None:
        if token is None:
            return
        if error is not None:
            _record_error(token, error)
        token.end()

    @contextlib.contextmanager
    def _phase_cm(self, ctx: RequestContext, plugin: str, phase: str) -> Iterator[None]:
        token = self.start_phase(ctx, plugin, phase)
        try:
            yield
        except BaseException as e:
            self.end_phase(token, e)
            raise
        self.end_phase(token)

    def phase(self, ctx: RequestContext, plugin: str, phase: str) -> AbstractContextManager[None]:
        return self._phase_cm(ctx, plugin, phase)

    def start_attempt(self, ctx: RequestContext, target: Any) -> list[tuple[str, str]]:
        parent = self._parent(ctx)
        if parent is None:
            return []
        self.end_attempt(ctx)  # a previous attempt the data plane did not close
        attrs: dict[str, str | int] = {
            "http.request.method": ctx.upstream_request.method,
            "portway.attempt": ctx.attempt,
        }
        if ctx.upstream_name:
            attrs["portway.upstream"] = ctx.upstream_name
        if target is not None:
            attrs["server.address"] = str(getattr(target, "host", ""))
            port = getattr(target, "port", None)
            if isinstance(port, int):
                attrs["server.port"] = port
            attrs["portway.target"] = str(getattr(target, "id", ""))
            attrs["url.full"] = (
                f"{getattr(target, 'scheme', 'http')}://{getattr(target, 'authority', '')}"
                f"{ctx.upstream_request.target}"
            )
        span = self._tracer.start_span(
            ctx.upstream_request.method, context=parent, kind=SpanKind.CLIENT, attributes=attrs
        )
        ctx.state[_ATTEMPT_SPAN] = span
        return self.inject(span)

    def end_attempt(
        self, ctx: RequestContext, status: int | None = None, error: BaseException | None = None
    ) -> None:
        span = ctx.state.pop(_ATTEMPT_SPAN)
        if span is None:
            return
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(StatusCode.ERROR)
                span.set_attribute("error.type", str(status))
        if error is not None:
            _record_error(span, error)
        span.end()

    def end_request(self, ctx: RequestContext) -> None:
        self.end_attempt(ctx)
        span = ctx.state.pop(_REQUEST_SPAN)
        if span is None:
            return
        match = ctx.match
        method = ctx.request.method
        if match is not None:
            span.set_attribute("portway.route", match.route.name)
            if match.pattern:
                span.set_attribute("http.route", match.pattern)
                span.update_name(f"{method} {match.pattern}")
        if ctx.upstream_name:
            span.set_attribute("portway.upstream", ctx.upstream_name)
        consumer = ctx.consumer
        if consumer is not None and not consumer.anonymous:
            span.set_attribute("portway.consumer", consumer.username)
        rejected = ctx.extra.get("rejected_by")
        if rejected:
            span.set_attribute("portway.rejected_by", str(rejected))
        resp = ctx.response
        if resp is None:
            span.set_status(StatusCode.ERROR, "no response")
            span.set_attribute("error.type", "disconnected")
        else:
            span.set_attribute("http.response.status_code", resp.status)
            if resp.status >= 500:
                span.set_status(StatusCode.ERROR)
                span.set_attribute("error.type", str(resp.status))
        if ctx.error is not None:
            span.set_attribute("error.type", type(ctx.error).__name__)
        span.end()

    async def force_flush(self) -> None:
        await asyncio.to_thread(self._provider.force_flush)

    async def aclose(self) -> None:
        """Flush and stop the exporter (in a thread: the export may wait on the network),
        bounded by ``shutdown_timeout``: past it the exporter is shut down under the SDK's
        feet, which aborts its retry wait, and what was still queued is dropped."""
        if self._closed:
            return
        self._closed = True
        task = asyncio.ensure_future(asyncio.to_thread(self._provider.shutdown))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.config.shutdown_timeout)
            return
        except TimeoutError:
            log.warning(
                "span export did not finish within %.1fs of shutdown; dropping queued spans",
                self.config.shutdown_timeout,
            )
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._exporter.shutdown)
        with contextlib.suppress(Exception, TimeoutError):
            await asyncio.wait_for(task, 2.0)


def _record_error(span: Span, error: BaseException) -> None:
    span.set_status(StatusCode.ERROR, type(error).__name__)
    span.set_attribute("error.type", type(error).__name__)
