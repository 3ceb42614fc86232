"""Metrics: label bounding, exposition, cross-worker merge, upstream state at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from portway.config.schema import UpstreamConfig
from portway.observability.metrics import DURATION_BUCKETS, Metrics, Snapshot
from portway.upstream.upstream import Upstream
from tests.observability.support import make_ctx


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def L(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_requests_counted_with_bounded_labels() -> None:
    m = Metrics(include_default_registry=False)
    m.on_request_done(make_ctx("GET", status=200))
    m.on_request_done(make_ctx("GET", status=204))
    m.on_request_done(make_ctx("BREW", status=418))
    m.on_request_done(make_ctx("POST", status=None))
    m.on_request_done(make_ctx("GET", route=None, upstream=None, status=404))
    s = samples(m)
    base = {"route": "r", "upstream": "u"}
    assert s[("portway_requests_total", L(**base, method="GET", status_class="2xx"))] == 2
    assert s[("portway_requests_total", L(**base, method="OTHER", status_class="4xx"))] == 1
    assert s[("portway_requests_total", L(**base, method="POST", status_class="none"))] == 1
    no_route = L(route="", upstream="", method="GET", status_class="4xx")
    assert s[("portway_requests_total", no_route)] == 1
    # raw paths and methods never become label values
    body = m.render()[0].decode()
    assert "/x" not in body and "BREW" not in body


def test_histograms_bytes_and_rejections() -> None:
    m = Metrics(include_default_registry=False)
    ctx = make_ctx(status=401, upstream_latency=0.003, bytes_in=100, bytes_out=2000)
    ctx.start = time.perf_counter() - 0.02
    ctx.extra["rejected_by"] = "key_auth"
    m.on_request_done(ctx)
    m.on_request_done(make_ctx(status=200, bytes_in=1, bytes_out=2))
    s = samples(m)
    ru = {"route": "r", "upstream": "u"}
    assert s[("portway_request_duration_seconds_count", L(**ru))] == 2
    assert s[("portway_request_duration_seconds_bucket", L(**ru, le="0.01"))] == 1
    assert s[("portway_request_duration_seconds_bucket", L(**ru, le="0.025"))] == 2
    assert s[("portway_request_duration_seconds_bucket", L(**ru, le="+Inf"))] == 2
    assert s[("portway_upstream_duration_seconds_count", L(**ru))] == 1
    assert s[("portway_upstream_duration_seconds_bucket", L(**ru, le="0.0025"))] == 0
    assert s[("portway_upstream_duration_seconds_bucket", L(**ru, le="0.005"))] == 1
    assert abs(s[("portway_upstream_duration_seconds_sum", L(**ru))] - 0.003) < 1e-9
    assert s[("portway_bytes_received_total", L(**ru))] == 101
    assert s[("portway_bytes_sent_total", L(**ru))] == 2002
    rej = L(route="r", plugin="key_auth", status="401")
    assert s[("portway_plugin_rejections_total", rej)] == 1


def test_gauges_reloads_and_cache() -> None:
    m = Metrics(include_default_registry=False)
    m.connection_opened()
    m.connection_opened()
    m.connection_closed()
    m.config_reload("ok")
    m.config_reload("error")
    m.config_reload("ok")
    m.cache_result("r", "hit")
    m.cache_result("r", "weird-value")
    s = samples(m)
    assert s[("portway_active_connections", ())] == 1
    assert s[("portway_config_reloads_total", L(result="ok"))] == 2
    assert s[("portway_config_reloads_total", L(result="error"))] == 1
    assert s[("portway_cache_requests_total", L(route="r", result="hit"))] == 1
    assert s[("portway_cache_requests_total", L(route="r", result="other"))] == 1


def test_upstream_targets_read_at_scrape_time() -> None:
    cfg = UpstreamConfig.model_validate(
        {
            "targets": [{"url": "http://127.0.0.1:9001"}, {"url": "http://127.0.0.1:9002"}],
            "circuit_breaker": {},
        }
    )
    up = Upstream("api", cfg)
    m = Metrics(include_default_registry=False)
    m.set_upstreams_source(lambda: {"api": up})
    t1, t2 = up.targets
    t2.healthy = False
    t1.in_flight = 3
    s = samples(m)
    assert s[("portway_upstream_target_up", L(upstream="api", target=t1.id))] == 1
    assert s[("portway_upstream_target_up", L(upstream="api", target=t2.id))] == 0
    assert s[("portway_upstream_target_in_flight", L(upstream="api", target=t1.id))] == 3
    assert s[("portway_circuit_state", L(upstream="api", target=t1.id))] == 0
    t1.breaker.state = "open"  # what the breaker reports after tripping
    t1.breaker.opened_at = time.monotonic()
    s = samples(m)
    assert s[("portway_circuit_state", L(upstream="api", target=t1.id))] in (1, 2)


def test_broken_upstream_source_does_not_break_scrape() -> None:
    m = Metrics(include_default_registry=False)

    def boom() -> dict[str, object]:
        raise RuntimeError("graph swapping")

    m.set_upstreams_source(boom)
    m.on_request_done(make_ctx())
    assert (
        samples(m)[
            ("portway_requests_total", L(route="r", upstream="u", method="GET", status_class="2xx"))
        ]
        == 1
    )


def test_openmetrics_negotiation() -> None:
    m = Metrics(include_default_registry=False)
    m.on_request_done(make_ctx())
    body, ctype = m.render("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


async def test_multiprocess_merge(tmp_path: Path) -> None:
    d = str(tmp_path)
    w1 = Metrics(multiprocess_dir=d, include_default_registry=False)
    w2 = Metrics(multiprocess_dir=d, include_default_registry=False)
    await w1.start()
    for _ in range(3):
        w1.on_request_done(make_ctx())
    w1.connection_opened()
    w1.flush()
    w2.on_request_done(make_ctx())
    w2.connection_opened()
    s = samples(w2)
    key = ("portway_requests_total", L(route="r", upstream="u", method="GET", status_class="2xx"))
    assert s[key] == 4
    assert s[("portway_request_duration_seconds_count", L(route="r", upstream="u"))] == 4
    assert s[("portway_active_connections", ())] == 2
    # a worker that exits keeps its counters in the totals but not its gauges
    await w1.aclose()
    s = samples(w2)
    assert s[key] == 4
    assert s[("portway_active_connections", ())] == 1


def test_dead_worker_gauges_dropped_counters_kept(tmp_path: Path) -> None:
    code = (
        "from portway.observability.metrics import Metrics\n"
        "from tests.observability.support import make_ctx\n"
        f"m = Metrics(multiprocess_dir={str(tmp_path)!r}, include_default_registry=False)\n"
        "m.on_request_done(make_ctx('PUT', status=503)); m.connection_opened(); m.flush()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["src", "."])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parents[2])
    m = Metrics(multiprocess_dir=str(tmp_path), include_default_registry=False)
    s = samples(m)
    key = ("portway_requests_total", L(route="r", upstream="u", method="PUT", status_class="5xx"))
    assert s[key] == 1
    assert s[("portway_active_connections", ())] == 0  # killed without aclose: pid is gone


def test_corrupt_worker_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "portway-1-deadbeef.json").write_bytes(b"{not json")
    (tmp_path / "portway-2-deadbeef.json").write_bytes(b'{"buckets": [1, 2], "series": []}')
    m = Metrics(multiprocess_dir=str(tmp_path), include_default_registry=False)
    m.on_request_done(make_ctx())
    key = ("portway_requests_total", L(route="r", upstream="u", method="GET", status_class="2xx"))
    assert samples(m)[key] == 1


def test_default_registry_included() -> None:
    m = Metrics()
    body = m.render()[0].decode()
    assert "python_info" in body or "process_" in body
    assert "portway_active_connections" in body


def test_hot_path_records_every_request() -> None:
    # speed is measured by bench/metrics_bench.py, not asserted here
    m = Metrics(include_default_registry=False)
    ctxs = [make_ctx(route=f"r{i}", upstream_latency=0.001) for i in range(8)]
    for i in range(800):
        m.on_request_done(ctxs[i & 7])
    body = m.render()[0].decode()
    assert body.count('route="r') >= 8
    assert len(DURATION_BUCKETS) > 5


def test_cache_plugin_counters_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache hands its counters over by registration (observability/sources.py):
    metrics never look the plugin up."""
    from portway.observability import sources

    monkeypatch.setattr(sources, "_SOURCES", {})
    sources.register_cache_stats(
        lambda: {"routes": {"r": {"hit": 3, "miss": 2, "Bad Name": 9}}, "stores": []}
    )
    m = Metrics(include_default_registry=False)
    m.cache_result("r", "hit")
    s = samples(m)
    assert s[("portway_cache_requests_total", L(route="r", result="hit"))] == 4
    assert s[("portway_cache_requests_total", L(route="r", result="miss"))] == 2
    assert all("Bad Name" not in str(k) for k in s)


def test_the_cache_plugin_registers_its_counters() -> None:
    from portway.observability.sources import cache_stats_sources
    from portway.plugins.cache import registry

    assert registry.stats in cache_stats_sources()


def test_the_runtime_publish_and_proxy_register_their_counters() -> None:
    """Ejections (registered by the runtime: ``upstream`` sits below observability), the
    publish plugin's events and the pool overflows reach the metrics by registration, not
    through ``sys.modules``."""
    import portway.runtime.builder  # noqa: F401  (registers the ejection counters)
    from portway.observability import sources
    from portway.plugins.publish import publisher
    from portway.proxy import overload
    from portway.upstream import ejections

    assert ejections.counts in sources.count_sources(sources.EJECTIONS)
    assert publisher.counts in sources.count_sources(sources.EVENTS)
    assert overload.counts in sources.count_sources(sources.POOL_OVERFLOW)
    metrics_src = Path(__file__).resolve().parents[2] / "src/portway/observability/metrics.py"
    assert "sys.modules" not in metrics_src.read_text()


def test_registered_pair_counters_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    from portway.observability import sources

    monkeypatch.setattr(sources, "_SOURCES", {})
    sources.register_counts(sources.EJECTIONS, lambda: {("u", "timeout"): 2, ("u", "Bad!"): 5})
    sources.register_counts(sources.EVENTS, lambda: {("kafka", ""): 7, ("kafka", "full"): 1})
    sources.register_counts(sources.POOL_OVERFLOW, lambda: {("u", "127.0.0.1:1"): 3})
    sources.register_counts(sources.POOL_OVERFLOW, lambda: {("u", "127.0.0.1:1"): 1})

    def broken() -> dict[tuple[str, str], int]:
        raise RuntimeError("bookkeeping bug")

    sources.register_counts(sources.EVENTS, broken)
    m = Metrics(include_default_registry=False)
    s = samples(m)
    assert s[("portway_upstream_ejections_total", L(upstream="u", reason="timeout"))] == 2
    assert all("Bad!" not in str(k) for k in s)
    assert s[("portway_events_sent_total", L(sink="kafka"))] == 7
    assert s[("portway_events_dropped_total", L(sink="kafka", reason="full"))] == 1
    key = ("portway_upstream_pool_overflow_total", L(upstream="u", target="127.0.0.1:1"))
    assert s[key] == 4
    # a worker's dump carries them to the other workers' scrapes
    snap = m.snapshot()
    other = Snapshot(snap.buckets)
    other.merge_json(orjson.loads(snap.to_json(1)), alive=False)
    assert other.overflows == {("u", "127.0.0.1:1"): 4}
    assert other.ejections[("u", "timeout")] == 2


def test_bucket_is_bisect_left() -> None:
    import bisect

    from portway.observability.metrics import _bucket

    bounds = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    for v in (0.0, 0.001, 0.005, 0.0050001, 0.01, 0.3, 1.0, 9.99, 10.0, 11.0, 1e9):
        assert _bucket(bounds, v) == bisect.bisect_left(bounds, v)
    assert _bucket((), 1.0) == 0


@pytest.mark.parametrize("buckets", [DURATION_BUCKETS, (0.5,), ()])
def test_remembered_buckets_equal_bisect(buckets: tuple[float, ...]) -> None:
    """The last value's bucket is remembered with its range (``Metrics._u_i``): values at,
    just under and just over every bound, repeated and alternating, land where
    ``bisect_left`` puts them."""
    import bisect
    import random

    m = Metrics(include_default_registry=False, buckets=buckets)
    values = [0.0, -1.0, 1e9, float("inf")]
    for b in buckets:
        values += [b, b, b * 0.999999, b * 1.000001, b * 1.000001, b]
    values += random.Random(7).choices(values, k=200)
    for v in values:
        m.on_request_done(make_ctx(status=200, upstream_latency=v))
    got = samples(m)
    ru = {"route": "r", "upstream": "u"}
    for le_i, le in enumerate(buckets):
        want = sum(1 for v in values if bisect.bisect_left(buckets, v) <= le_i)
        assert got[("portway_upstream_duration_seconds_bucket", L(**ru, le=str(le)))] == want
    assert got[("portway_upstream_duration_seconds_count", L(**ru))] == len(values)


def test_folded_counters_equal_per_request_counts() -> None:
    """Runs of equal requests are counted lazily (``_Series.count``): every scrape, between
    runs or in the middle of one, shows exactly what one increment per request would."""
    import bisect

    from portway.pipeline.context import FALLBACK, FAST, GENERAL

    m = Metrics(include_default_registry=False)
    bounds = m.buckets
    want: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def add(name: str, labels: tuple[tuple[str, str], ...], n: float = 1) -> None:
        want[(name, labels)] = want.get((name, labels), 0) + n

    ru = L(route="r", upstream="u")
    # (method, status, duration, upstream latency, served), repeated in runs and mixed
    kinds = [
        ("GET", 200, 0.0001, 0.00005, FAST),
        ("GET", 200, 0.0001, None, FAST),
        ("GET", 503, 0.03, 0.02, GENERAL),
        ("POST", None, 0.0001, 0.00005, FALLBACK),
        ("BREW", 99, 2.0, 0.6, GENERAL),
        ("HEAD", 302, 0.0006, 0.0006, FAST),
    ]
    plan = [0] * 5 + [1, 0, 0, 2, 2, 3, 0, 4, 5, 5, 5, 1, 1, 0]
    for step, k in enumerate(plan):
        method, status, dur, ul, served = kinds[k]
        ctx = make_ctx(method, status=status, upstream_latency=ul, served=served)
        ctx.start = time.perf_counter() - dur
        m.on_request_done(ctx)
        meth = method if method != "BREW" else "OTHER"
        cls = "none" if status is None else f"{status // 100}xx" if status >= 100 else "other"
        add("portway_requests_total", L(route="r", upstream="u", method=meth, status_class=cls))
        add("portway_route_path_requests_total", L(route="r", path=PATH[served]))
        for le_i, le in enumerate(bounds):
            if bisect.bisect_left(bounds, dur) <= le_i:
                add("portway_request_duration_seconds_bucket", L(**dict(ru), le=str(le)))
            if ul is not None and bisect.bisect_left(bounds, ul) <= le_i:
                add("portway_upstream_duration_seconds_bucket", L(**dict(ru), le=str(le)))
        add("portway_request_duration_seconds_count", ru)
        if ul is not None:
            add("portway_upstream_duration_seconds_count", ru)
        if step in (3, 9, 15, len(plan) - 1):  # scrapes mid-run and at a run's end
            got = samples(m)
            for key, n in want.items():
                assert got.get(key, 0) == n, (step, key)
    assert m.route_paths("r") == {"general": 3, "fast": 15, "fallback": 1}


PATH = {0: "general", 1: "fast", 2: "fallback"}
