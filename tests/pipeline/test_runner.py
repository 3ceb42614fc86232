"""The phase runner through a real gateway: order, short-circuit, per-attempt hooks, body
hooks, error mapping and plugin failures (DESIGN.md §4)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import Field

from portway.errors import UpstreamError
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, Stage
from portway.pipeline.registry import registry
from tests.helpers import free_port, http_get, run_gateway, run_upstream, simple_config

#: (plugin tag, phase, extra) in the order hooks ran; reset by the autouse fixture
EVENTS: list[tuple[str, str, Any]] = []


class ProbeConfig(PluginConfig):
    tag: str = ""
    answer: int | None = Field(None, description="short-circuit with this status")
    fail_in: str | None = Field(None, description="phase that raises RuntimeError")
    map_errors: bool = False


class Probe(Plugin[ProbeConfig]):
    """Records every phase it runs in; optionally answers early, fails or maps errors."""

    Config = ProbeConfig

    @property
    def tag(self) -> str:
        return self.config.tag or self.name

    def _hit(self, phase: str, extra: Any = None) -> None:
        EVENTS.append((self.tag, phase, extra))
        if self.config.fail_in == phase:
            raise RuntimeError(f"boom in {phase}")

    async def on_request(self, ctx: RequestContext) -> Response | None:
        self._hit("on_request")
        if self.config.answer is not None:
            return Response(self.config.answer, Headers(), b"short")
        return None

    async def on_upstream_request(self, ctx: RequestContext) -> None:
        self._hit("on_upstream_request", ctx.attempt)
        ctx.upstream_request.headers.add(f"x-attempt-{self.tag}", str(ctx.attempt))

    async def on_response(self, ctx: RequestContext) -> None:
        self._hit("on_response")

    async def on_error(self, ctx: RequestContext, exc: BaseException) -> Response | None:
        self._hit("on_error", type(exc).__name__)
        if self.config.map_errors and isinstance(exc, UpstreamError):
            return Response.json(599, {"mapped": exc.code})
        return None

    def on_log(self, ctx: RequestContext) -> None:
        self._hit("on_log", ctx.response.status if ctx.response else None)


def _probe(name: str, stage: Stage = Stage.traffic) -> type[Probe]:
    cls = type(f"Probe_{name}", (Probe,), {"name": name, "stage": stage})
    registry.register(cls)
    return cls


_probe("t_a")
_probe("t_b")
_probe("t_c")
_probe("t_edge", Stage.edge)
_probe("t_authn", Stage.authn)
_probe("t_tx", Stage.transform)


class Upper(Plugin[ProbeConfig]):
    """Transforms the body (upper-cases it): forces chunked re-framing."""

    name = "t_upper"
    Config = ProbeConfig

    async def on_response_chunk(self, ctx: RequestContext, chunk: bytes, end: bool) -> bytes:
        if self.config.fail_in == "on_response_chunk":
            raise RuntimeError("chunk boom")
        return chunk.upper()


SEEN: ContextKey[int] = ContextKey("test.seen_bytes")
FLAG: ContextKey[str] = ContextKey("test.flag")


class Counter(Plugin[ProbeConfig]):
    """Only observes body bytes: the upstream's Content-Length is kept."""

    name = "t_counter"
    Config = ProbeConfig
    observes_response_chunks: ClassVar[bool] = True

    async def on_response_chunk(self, ctx: RequestContext, chunk: bytes, end: bool) -> bytes:
        ctx.state[SEEN] = (ctx.state.get(SEEN) or 0) + len(chunk)
        return chunk

    def on_log(self, ctx: RequestContext) -> None:
        EVENTS.append(("t_counter", "seen", ctx.state.get(SEEN)))


class Writer(Plugin[ProbeConfig]):
    name = "t_writer"
    Config = ProbeConfig

    async def on_request(self, ctx: RequestContext) -> Response | None:
        ctx.state[FLAG] = f"from-writer:{ctx.request.path}"
        return None


class Reader(Plugin[ProbeConfig]):
    name = "t_reader"
    Config = ProbeConfig

    async def on_response(self, ctx: RequestContext) -> None:
        assert ctx.response is not None
        value: str | None = ctx.state.get(FLAG)
        ctx.response.headers.set("x-flag", value or "missing")


for _cls in (Upper, Counter, Writer, Reader):
    registry.register(_cls)


@pytest.fixture(autouse=True)
def _reset() -> None:
    EVENTS.clear()


def _b(name: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "config": config}


def _phase(phase: str) -> list[str]:
    return [tag for tag, ph, _ in EVENTS if ph == phase]


def _logged() -> bool:
    return any(ph == "on_log" for _, ph, _ in EVENTS)


async def _settle(done: Callable[[], bool] = _logged, timeout: float = 5.0) -> None:
    """Wait until ``done()`` (default: the request's ``on_log`` hooks ran, after its last
    byte was written; they all run in one synchronous pass, ``RuntimeGraph.request_done``,
    so the first one seen means all were). Fails on timeout."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not done():
        if loop.time() > end:
            raise AssertionError(f"on_log never ran: {EVENTS}")
        await asyncio.sleep(0.005)


class KeepAlive:
    """A raw HTTP/1.1 client on one connection, to prove the connection survives."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> KeepAlive:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        async with asyncio.timeout(5):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            hdrs = {
                k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
            }
            if "content-length" in hdrs:
                body = await self.reader.readexactly(int(hdrs["content-length"]))
            else:
                body = b""
                while True:
                    line = await self.reader.readline()
                    if not line:
                        raise asyncio.IncompleteReadError(body, None)
                    size = int(line.strip(), 16)
                    data = await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
                    body += data[:-2]
        return status, hdrs, body

    def close(self) -> None:
        self.writer.close()


# --- order ------------------------------------------------------------------------------


async def test_request_phases_in_binding_order_response_phases_reversed() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_b"), _b("t_c")])
        cfg["plugins"] = [_b("t_a")]
        async with run_gateway(cfg) as gw:
            status, _, body = await http_get(gw.url + "/x")
            await _settle()
    assert status == 200
    assert _phase("on_request") == ["t_a", "t_b", "t_c"]
    assert _phase("on_upstream_request") == ["t_a", "t_b", "t_c"]
    assert _phase("on_response") == ["t_c", "t_b", "t_a"]
    assert _phase("on_log") == ["t_c", "t_b", "t_a"]
    assert _phase("on_error") == []
    sent = dict(orjson.loads(body)["headers"])
    assert sent["x-attempt-t_a"] == sent["x-attempt-t_c"] == "1"


async def test_short_circuit_skips_later_plugins_but_logs_all() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_a"), _b("t_b", answer=418), _b("t_c")])
        async with run_gateway(cfg) as gw:
            status, _, body = await http_get(gw.url + "/x")
            await _settle()
        assert up.requests == []
    assert (status, body) == (418, b"short")
    assert _phase("on_request") == ["t_a", "t_b"]
    assert _phase("on_upstream_request") == []
    # only plugins that saw the request see the local reply (Envoy's local-reply rule)
    assert _phase("on_response") == ["t_b", "t_a"]
    assert _phase("on_log") == ["t_c", "t_b", "t_a"]
    assert [x for _, ph, x in EVENTS if ph == "on_log"] == [418, 418, 418]


async def test_on_upstream_request_runs_once_per_attempt() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_a")])
        cfg["upstreams"]["u"] = {
            "targets": [{"url": dead}, {"url": up.url}],
            "balancing": "round_robin",
            "retries": {"attempts": 2, "backoff": 0},
            "health": {"passive": None},
        }
        per_request: list[list[int]] = []
        seen: list[list[str]] = []
        async with run_gateway(cfg) as gw:
            for _ in range(4):
                EVENTS.clear()
                status, _, body = await http_get(gw.url + "/x")
                assert status == 200
                per_request.append([x for _, ph, x in EVENTS if ph == "on_upstream_request"])
                hdrs = orjson.loads(body)["headers"]
                seen.append([v for k, v in hdrs if k == "x-attempt-t_a"])
    assert [1, 2] in per_request  # the refused target was tried first at least once
    for attempts, values in zip(per_request, seen, strict=True):
        assert attempts == list(range(1, len(attempts) + 1))
        # a retry starts from the pre-attempt headers: nothing a failed attempt added leaks
        assert values == [str(len(attempts))]


# --- body hooks -------------------------------------------------------------------------


async def _big(req: Request) -> Response:
    return Response(200, Headers([(b"content-type", b"text/plain")]), b"hello world " * 1000)


async def test_transforming_chunk_hook_reframes_body() -> None:
    async with run_upstream(_big) as up:
        async with run_gateway(simple_config(up.url, plugins=[_b("t_upper")])) as gw:
            conn = await KeepAlive.open(gw.port)
            try:
                status, hdrs, body = await conn.get("/x")
                again = await conn.get("/y")
            finally:
                conn.close()
    assert status == 200 and body == b"HELLO WORLD " * 1000
    assert "content-length" not in hdrs and hdrs["transfer-encoding"] == "chunked"
    assert again[0] == 200 and again[2] == body


async def test_observing_chunk_hook_keeps_content_length() -> None:
    async with run_upstream(_big) as up:
        async with run_gateway(simple_config(up.url, plugins=[_b("t_counter")])) as gw:
            conn = await KeepAlive.open(gw.port)
            try:
                status, hdrs, body = await conn.get("/x")
            finally:
                conn.close()
            await _settle(lambda: any(ph == "seen" for _, ph, _ in EVENTS))
    assert status == 200 and body == b"hello world " * 1000
    assert hdrs["content-length"] == str(len(body)) and "transfer-encoding" not in hdrs
    assert ("t_counter", "seen", len(body)) in EVENTS


async def test_chunk_hook_on_short_circuit_body_only_if_reached() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_upper"), _b("t_tx", answer=200)])
        cfg["routes"].append(
            {
                "name": "early",
                "match": {"paths": ["/early"]},
                "upstream": "u",
                # t_a (traffic stage) runs before t_upper (transform) and answers first
                "plugins": [_b("t_upper"), _b("t_a", answer=200)],
            }
        )
        async with run_gateway(cfg) as gw:
            status, hdrs, body = await http_get(gw.url + "/x")
            status2, _, body2 = await http_get(gw.url + "/early")
    assert status == 200 and body == b"SHORT"
    assert hdrs.get("content-length") == "5"
    assert status2 == 200 and body2 == b"short"


# --- errors -----------------------------------------------------------------------------


async def test_on_error_maps_upstream_failure() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = simple_config(dead, plugins=[_b("t_a", map_errors=True), _b("t_b", fail_in="on_error")])
    cfg["upstreams"]["u"]["retries"] = {"attempts": 1}
    async with run_gateway(cfg) as gw:
        status, _, body = await http_get(gw.url + "/x")
        await _settle()
    assert status == 599 and orjson.loads(body)["mapped"].startswith("upstream_connect")
    # reverse order: t_b (raises, logged and skipped), then t_a maps it
    assert [(t, x) for t, ph, x in EVENTS if ph == "on_error"] == [
        ("t_b", "UpstreamConnectError"),
        ("t_a", "UpstreamConnectError"),
    ]


async def test_unmapped_error_is_json_and_on_error_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = simple_config(dead, plugins=[_b("t_b", fail_in="on_error")])
    cfg["upstreams"]["u"]["retries"] = {"attempts": 1}
    with caplog.at_level(logging.ERROR, logger="portway.plugins"):
        async with run_gateway(cfg) as gw:
            status, hdrs, body = await http_get(gw.url + "/x")
    assert status == 502 and hdrs.get("content-type") == "application/json"
    assert orjson.loads(body)["code"] == "upstream_connect_failed"
    assert any("t_b" in r.getMessage() and "on_error" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("phase", ["on_request", "on_upstream_request", "on_response"])
async def test_plugin_crash_is_json_500_for_that_request_only(
    phase: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_a"), _b("t_b", fail_in=phase)])
        cfg["routes"].append({"name": "ok", "match": {"paths": ["=/ok"]}, "upstream": "u"})
        with caplog.at_level(logging.ERROR, logger="portway.plugins"):
            async with run_gateway(cfg) as gw:
                conn = await KeepAlive.open(gw.port)
                try:
                    status, hdrs, body = await conn.get("/x")
                finally:
                    conn.close()
                # the gateway is fine: other requests (and routes) keep working
                ok = await http_get(gw.url + "/ok")
                await _settle()
    assert status == 500 and hdrs["content-type"] == "application/json"
    err = orjson.loads(body)
    assert err["code"] == "plugin_error" and err["status"] == 500
    assert "t_b" in err["error"] and "boom" not in err["error"]  # no internals leak
    assert ok[0] == 200
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("t_b" in r.getMessage() and phase in r.getMessage() for r in errors)
    assert all(r.exc_info is not None for r in errors if "t_b" in r.getMessage())
    # every plugin still logs the failed request, with its 500
    assert ("t_a", "on_log", 500) in EVENTS and ("t_b", "on_log", 500) in EVENTS


async def test_chunk_hook_crash_aborts_that_response_and_names_plugin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with run_upstream(_big) as up:
        cfg = simple_config(up.url, plugins=[_b("t_upper", fail_in="on_response_chunk")])
        cfg["routes"].append({"name": "ok", "match": {"paths": ["=/ok"]}, "upstream": "u"})
        with caplog.at_level(logging.ERROR, logger="portway.plugins"):
            async with run_gateway(cfg) as gw:
                conn = await KeepAlive.open(gw.port)
                try:
                    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                        await conn.get("/x")
                finally:
                    conn.close()
                ok = await http_get(gw.url + "/ok")
    assert ok[0] == 200 and ok[2].startswith(b"hello")
    assert any(
        "t_upper" in r.getMessage() and "on_response_chunk" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
    )


async def test_on_log_exception_is_swallowed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_a", fail_in="on_log"), _b("t_b")])
        with caplog.at_level(logging.ERROR, logger="portway.plugins"):
            async with run_gateway(cfg) as gw:
                conn = await KeepAlive.open(gw.port)
                try:
                    first = await conn.get("/x")
                    second = await conn.get("/y")
                finally:
                    conn.close()
                await _settle()
    assert first[0] == second[0] == 200
    # t_b's on_log (which runs first, in reverse order) and t_a's both ran for each request
    assert _phase("on_log") == ["t_b", "t_a", "t_b", "t_a"]
    assert any(
        "t_a" in r.getMessage() and "on_log" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )


async def test_context_key_state_shared_between_plugins() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_writer"), _b("t_reader")])
        async with run_gateway(cfg) as gw:
            status, hdrs, _ = await http_get(gw.url + "/shared")
            status2, hdrs2, _ = await http_get(gw.url + "/other")
    assert status == status2 == 200
    # per-request: each request sees only what was written for it
    assert hdrs.get("x-flag") == "from-writer:/shared"
    assert hdrs2.get("x-flag") == "from-writer:/other"


# --- stages and bindings ----------------------------------------------------------------


async def test_global_and_route_bindings_merge_sorted_by_stage() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[_b("t_a", tag="route-a"), _b("t_authn")])
        # globals listed in stage order; the route's own (traffic, authn) interleave by stage
        cfg["plugins"] = [_b("t_edge"), _b("t_a", tag="global-a"), _b("t_tx")]
        async with run_gateway(cfg) as gw:
            assert (await http_get(gw.url + "/x"))[0] == 200
            await _settle()
    # t_a's route binding replaced the global one (same name) and kept its stage slot
    assert _phase("on_request") == ["t_edge", "t_authn", "route-a", "t_tx"]
    assert _phase("on_response") == ["t_tx", "route-a", "t_authn", "t_edge"]


async def test_disabled_bindings_are_skipped_and_can_switch_off_a_global() -> None:
    async with run_upstream() as up:
        cfg = simple_config(
            up.url, plugins=[{"name": "t_a", "enabled": False}, _b("t_b", tag="route-b")]
        )
        cfg["routes"].append({"name": "plain", "match": {"paths": ["=/plain"]}, "upstream": "u"})
        cfg["plugins"] = [_b("t_a", tag="global-a"), {"name": "t_c", "enabled": False}]
        async with run_gateway(cfg) as gw:
            assert (await http_get(gw.url + "/x"))[0] == 200
            await _settle()
            first = _phase("on_request")
            EVENTS.clear()
            assert (await http_get(gw.url + "/plain"))[0] == 200
            await _settle()
            second = _phase("on_request")
    assert first == ["route-b"]  # the route switched the global t_a off; t_c is disabled
    assert second == ["global-a"]


def test_merged_bindings_order_is_stable_within_a_stage() -> None:
    from portway.config.schema import PluginBinding, RouteConfig
    from portway.runtime.builder import merged_bindings

    globals_ = [PluginBinding(name=n) for n in ("t_edge", "t_b", "t_c", "t_tx")]
    route = RouteConfig(
        name="r",
        plugins=[PluginBinding(name="t_authn"), PluginBinding(name="t_a")],
    )
    got = [(w, b.name) for w, b in merged_bindings(globals_, route)]
    assert got == [
        ("global", "t_edge"),
        ("route", "t_authn"),
        ("global", "t_b"),
        ("global", "t_c"),
        ("route", "t_a"),
        ("global", "t_tx"),
    ]
