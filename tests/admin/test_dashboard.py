"""The dashboard's server side: static files, token rules, live figures, the route probe,
config diff and the recent-errors recorder (pure logic and the admin app over a fake
control; the browser test drives the whole thing against a real gateway)."""

from __future__ import annotations

from typing import Any

import orjson

from portway.admin.app import AdminApp
from portway.admin.dashboard.api import is_public, probe
from portway.admin.dashboard.errors import RecentErrors
from portway.admin.dashboard.live import LiveStats, quantile
from portway.config.loader import load_config_text
from portway.config.schema import AdminConfig, RouteConfig
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.observability.metrics import DURATION_BUCKETS, Metrics
from portway.pipeline.context import RequestContext
from portway.routing.router import RouteMatch
from tests.admin.conftest import AUTH, BASE_YAML, TOKEN, FakeControl
from tests.admin.conftest import make_request as req


def _req(method: str, path: str, headers: list[tuple[str, str]] | None = None) -> Request:
    target = path.encode()
    p, _, q = target.partition(b"?")
    return Request(method, p.decode(), q, Headers.from_pairs(headers or []))


def _app(metrics: Metrics | None = None) -> AdminApp:
    return AdminApp(FakeControl(), AdminConfig(token=TOKEN, address="127.0.0.1:0"), metrics=metrics)


async def test_page_and_assets_need_no_token_but_data_does() -> None:
    app = _app(Metrics())
    for path in ("/dashboard", "/dashboard/", "/dashboard/app.js", "/dashboard/app.css"):
        assert is_public(path)
        r = await app.handle(_req("GET", path))
        assert r.status == 200, path
        assert "default-src 'none'" in (r.headers.get("content-security-policy") or "")
        assert r.headers.get("x-frame-options") == "DENY"
    r = await app.handle(_req("GET", "/dashboard/api/overview"))
    assert r.status == 401
    r = await app.handle(_req("GET", "/dashboard/secret.txt"))
    assert r.status == 401  # not a known asset: not public either
    r = await app.handle(_req("GET", "/dashboard/secret.txt", AUTH))
    assert r.status == 404
    assert not is_public("/dashboard/api/overview")
    assert not is_public("/dashboard/../config")


def test_quantile_interpolates_like_prometheus() -> None:
    bounds = (0.1, 0.2, 0.4)
    assert quantile(0.5, bounds, (0, 0, 0, 0)) is None
    # 10 observations in (0.1, 0.2]: the median is halfway through that bucket
    assert abs((quantile(0.5, bounds, (0, 10, 0, 0)) or 0) - 0.15) < 1e-9
    # everything in the overflow bucket answers the last bound
    assert quantile(0.99, bounds, (0, 0, 0, 5)) == 0.4


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _ctx(route: str, status: int, seconds: float, *, upstream: bool = True) -> RequestContext:
    ctx = RequestContext(_req("GET", "/x"))
    ctx.match = RouteMatch(RouteConfig(name=route, upstream="u"), 0)
    ctx.upstream_name = "u"
    ctx.response = Response(status, Headers(), b"", upstream=upstream)
    ctx.start -= seconds
    return ctx


def test_live_rates_error_ratio_and_percentiles_from_metric_deltas() -> None:
    metrics = Metrics()
    clock = _Clock()
    live = LiveStats(metrics.merged, interval=2.0, clock=clock)
    for _ in range(10):
        metrics.on_request_done(_ctx("a", 200, 0.003))
    live.sample()  # t=1000: 10 requests before the window
    clock.t += 10
    for _ in range(18):
        metrics.on_request_done(_ctx("a", 200, 0.003))
    for _ in range(2):
        metrics.on_request_done(_ctx("b", 503, 0.2))
    live.sample()  # t=1010
    view = live.view(60)
    assert view["window_s"] == 10
    total = view["total"]
    assert total["requests"] == 20  # only what happened inside the window
    assert total["rps"] == 2.0
    assert total["error_rate"] == 0.1
    assert total["status"]["2xx"] == 18 and total["status"]["5xx"] == 2
    assert total["p50_ms"] is not None and total["p50_ms"] <= 5
    assert total["p99_ms"] is not None and total["p99_ms"] > 100
    assert view["routes"]["b"]["requests"] == 2
    assert view["routes"]["a"]["error_rate"] == 0
    assert view["series"] and view["series"][-1]["rps"] == 2.0
    assert DURATION_BUCKETS  # the figures use the metrics' own buckets


def test_recent_errors_keep_gateway_made_errors_only() -> None:
    rec = RecentErrors(size=3)
    rec.on_request_done(_ctx("a", 503, 0.01, upstream=True))  # relayed: not ours
    rec.on_request_done(_ctx("a", 200, 0.01, upstream=False))
    ctx = _ctx("secure", 401, 0.01, upstream=False)
    ctx.response = Response.json(401, {"error": "no key", "code": "unauthorized"})
    ctx.request_id = "req-1"
    rec.on_request_done(ctx)
    rows = rec.records()
    assert [r["status"] for r in rows] == [401]
    assert rows[0]["code"] == "unauthorized" and rows[0]["route"] == "secure"
    assert rec.find("req-1") is not None and rec.find("req-1")["explain"]["request_id"] == "req-1"  # type: ignore[index]
    for i in range(5):
        rec.on_request_done(_ctx(f"r{i}", 404, 0.01, upstream=False))
    assert len(rec.records()) == 3  # bounded


def test_recent_errors_are_shared_through_the_metrics_directory(tmp_path: Any) -> None:
    a = RecentErrors(directory=str(tmp_path))
    b = RecentErrors(directory=str(tmp_path))
    b._file = str(tmp_path / "portway-errors-999999.json")  # another worker's file
    b.on_request_done(_ctx("x", 502, 0.01, upstream=False))
    b.flush()
    assert [r["route"] for r in a.records()] == ["x"]


def test_probe_explains_the_choice_and_why_others_did_not_match() -> None:
    cfg = load_config_text(BASE_YAML)
    r = probe(cfg, "GET", "", "/users/7", {})
    assert r["matched"] and r["route"] == "users" and r["upstream"] == "users"
    assert [p["name"] for p in r["plugins"]] == ["key_auth"]
    health = next(x for x in r["routes"] if x["route"] == "health")
    assert not health["matches"] and "path" in health["why_not"][0]
    r = probe(cfg, "DELETE", "", "/users", {})
    assert not r["matched"] and r["status"] == 405 and r["allowed_methods"]
    r = probe(cfg, "GET", "", "/nothing", {})
    assert not r["matched"] and r["status"] == 404
    r = probe(cfg, "GET", "", "/a/%2e%2e/%2e%2e/etc", {})
    assert r["path"] == "/etc"  # the router sees the normalised path, as the gateway does


async def test_explain_diff_and_history_endpoints() -> None:
    app = _app(Metrics())
    body = orjson.dumps({"method": "GET", "path": "/health"})
    r = await app.handle(
        req("POST", "/dashboard/api/explain", body, content_type="application/json")
    )
    assert r.status == 200 and orjson.loads(r.body)["route"] == "health"  # type: ignore[arg-type]
    edited = BASE_YAML.replace("=/health", "=/healthz")
    r = await app.handle(
        req("POST", "/dashboard/api/config/diff", edited.encode(), content_type="application/yaml")
    )
    d = orjson.loads(r.body)  # type: ignore[arg-type]
    assert d["changed"] and '+    match: {paths: ["=/healthz"]}' in d["diff"]
    r = await app.handle(_req("GET", "/dashboard/api/config/history", AUTH))
    assert r.status == 200 and orjson.loads(r.body)["data"] == []  # type: ignore[arg-type]
    r = await app.handle(_req("GET", "/dashboard/api/overview?window=5", AUTH))
    assert r.status == 400
    r = await app.handle(_req("GET", "/dashboard/api/overview?window=60", AUTH))
    assert r.status == 200 and orjson.loads(r.body)["total"]["requests"] == 0  # type: ignore[arg-type]


async def test_config_view_never_shows_secrets_and_diff_compares_like_for_like() -> None:
    app = _app(Metrics())
    r = await app.handle(req("GET", "/dashboard/api/config"))
    d = orjson.loads(r.body)  # type: ignore[arg-type]
    assert d["redacted"] is True
    assert "alice-key" not in d["yaml"] and "<redacted>" in d["yaml"]
    r = await app.handle(
        req(
            "POST",
            "/dashboard/api/config/diff",
            d["yaml"].encode(),
            content_type="application/yaml",
        )
    )
    assert orjson.loads(r.body)["changed"] is False  # type: ignore[arg-type]


async def test_recent_errors_are_fed_by_the_metrics_observer() -> None:
    # compiled, the graph calls observers through the Observer base class: the recorder is
    # not one (an interpreted class), so the metrics observer hands it the errors it filters
    from portway.observability.metrics import Metrics
    from portway.pipeline.runner import Chain
    from portway.runtime.gateway import Gateway

    rec = RecentErrors(size=3)
    metrics = Metrics()
    metrics.error_sink = rec.record
    gw = Gateway(load_config_text(BASE_YAML, "t.yaml"), observers=[metrics])
    await gw.start()
    try:
        gw.graph.request_done(Chain([]), _ctx("a", 502, 0.01, upstream=False))
        gw.graph.request_done(Chain([]), _ctx("a", 503, 0.01, upstream=True))  # relayed
        gw.graph.request_done(Chain([]), _ctx("a", 200, 0.01, upstream=False))
        assert [r["status"] for r in rec.records()] == [502]
    finally:
        await gw.aclose()
