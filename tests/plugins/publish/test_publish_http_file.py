"""``publish`` with the ``http`` (batched webhook) and ``file`` (JSON lines) sinks, the
destination template, sampling and config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.models import Request, Response
from tests.helpers import run_gateway, run_upstream
from tests.plugins.publish.support import (
    check_event,
    gateway_config,
    publisher_of,
    send_requests,
    wait_for,
)


async def test_webhook_gets_json_arrays_and_outage_is_retried() -> None:
    batches: list[list[dict[str, Any]]] = []
    state = {"fail": 3}

    async def hook(req: Request) -> Response:
        body = await req.body.read_all() if req.body is not None else b""
        assert req.headers.get("authorization") == "Bearer t"
        if state["fail"] > 0:
            state["fail"] -= 1
            return Response.json(503, {"error": "down"})
        batches.append(orjson.loads(body))
        return Response.json(200, {})

    async with run_upstream() as up, run_upstream(hook) as webhook:
        cfg = gateway_config(
            up.url,
            {
                "sink": "http",
                "url": webhook.url + "/events",
                "headers": {"authorization": "Bearer t"},
            },
        )
        async with run_gateway(cfg) as gw:
            ids = await send_requests(gw, 25)
            pub = publisher_of(gw)
            await wait_for(lambda: pub.sent == 25)
            assert not pub.dropped
    assert state["fail"] == 0  # three 503 answers were retried
    events = [ev for b in batches for ev in b]
    assert sorted(ev["request_id"] for ev in events) == sorted(ids)
    for ev in events:
        check_event(ev)


async def test_webhook_refusal_is_dropped_and_counted() -> None:
    async def hook(req: Request) -> Response:
        return Response.json(400, {"error": "no"})

    async with run_upstream() as up, run_upstream(hook) as webhook:
        cfg = gateway_config(up.url, {"sink": "http", "url": webhook.url})
        async with run_gateway(cfg) as gw:
            await send_requests(gw, 5)
            pub = publisher_of(gw)
            await wait_for(lambda: pub.dropped.get("rejected") == 5)
            assert pub.sent == 0


async def test_file_sink_json_lines_and_template(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    async with run_upstream() as up:
        cfg = gateway_config(up.url, {"sink": "file", "path": str(path)})
        async with run_gateway(cfg) as gw:
            ids = await send_requests(gw, 10)
            pub = publisher_of(gw)
            await wait_for(lambda: pub.sent == 10)
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [ev["request_id"] for ev in lines] == ids
    for ev in lines:
        check_event(ev)


async def test_sample_zero_emits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    async with run_upstream() as up:
        cfg = gateway_config(up.url, {"sink": "file", "path": str(path), "sample": 0.0})
        async with run_gateway(cfg) as gw:
            await send_requests(gw, 10)
            pub = publisher_of(gw)
            assert not pub.buf and pub.sent == 0
    assert path.read_bytes() == b""


BAD = """\
upstreams:
  u: {{targets: [{{url: "http://127.0.0.1:9"}}]}}
routes:
  - name: r
    match: {{paths: ["/"]}}
    upstream: u
plugins:
  - name: publish
    config:
{body}
"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("      sink: nats\n      url: nats://127.0.0.1:4222", "sink nats needs subject"),
        ("      sink: kafka\n      url: x", "sink"),
        (
            "      sink: nats\n      url: nats://h:4222\n      subject: 'a.{nope}'",
            "unknown placeholder {nope}",
        ),
        ("      sink: file\n      path: /tmp/x\n      fields: [route, secret]", "unknown field"),
        (
            "      sink: amqp\n      url: http://h\n      queue: q",
            "must start with amqp://",
        ),
        (
            "      sink: file\n      path: /tmp/x\n      buffer: {max_events: 10, on_full: block}",
            "on_full",
        ),
    ],
)
def test_bad_config_is_rejected_with_path_and_line(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config_text(BAD.format(body=body), "portway.yaml")
    text = str(ei.value)
    assert message in text
    assert "plugins[0]" in text and "line" in text


async def test_metrics_count_sent_and_dropped(tmp_path: Path) -> None:
    from portway.observability.metrics import Metrics

    def value(text: str, series: str) -> float:
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
        return 0.0

    sent = 'portway_events_sent_total{sink="file"}'
    dropped = 'portway_events_dropped_total{reason="buffer_full",sink="file"}'
    render = Metrics(multiprocess_dir=None).render
    before = render()[0].decode()
    async with run_upstream() as up:
        cfg = gateway_config(
            up.url,
            {"sink": "file", "path": str(tmp_path / "e"), "buffer": {"max_events": 1}},
        )
        async with run_gateway(cfg) as gw:
            pub = publisher_of(gw)
            # three events queued in one go: a buffer of one keeps the newest
            for _ in range(3):
                pub.put("", {"request_id": "x"})
            await wait_for(lambda: pub.sent == 1)
    after = render()[0].decode()
    assert value(after, sent) - value(before, sent) == 1
    assert value(after, dropped) - value(before, dropped) == 2


def test_event_counters_are_summed_over_worker_processes(tmp_path: Path) -> None:
    from portway.observability.metrics import Metrics
    from portway.plugins.publish import publisher

    mine = publisher.counts().get(("file", ""), 0)
    mine_dropped = publisher.counts().get(("nats", "buffer_full"), 0)
    other = {
        "pid": 0,  # a worker that is gone: its counters still count
        "buckets": [],
        "events": [["file", "", 5], ["nats", "buffer_full", 2]],
    }
    m = Metrics(multiprocess_dir=str(tmp_path), include_default_registry=False)
    other["buckets"] = list(m.buckets)
    (tmp_path / "portway-1-abcd.json").write_bytes(orjson.dumps(other))
    text = m.render()[0].decode()
    assert f'portway_events_sent_total{{sink="file"}} {float(mine + 5)}' in text
    series = 'portway_events_dropped_total{reason="buffer_full",sink="nats"}'
    assert f"{series} {float(mine_dropped + 2)}" in text


async def test_reload_keeps_the_buffer_and_a_changed_sink_is_flushed(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    async with run_upstream() as up:
        cfg = gateway_config(up.url, {"sink": "file", "path": str(first)})
        async with run_gateway(cfg) as gw:
            ids = await send_requests(gw, 5)
            pub = publisher_of(gw)
            # the request path stays task-free with the plugin (it only has on_log)
            assert gw.worker.app.fast_requests > 0
            await gw.reload(cfg)  # same config: the same publisher goes on
            assert publisher_of(gw) is pub
            ids += await send_requests(gw, 5)
            await gw.reload(gateway_config(up.url, {"sink": "file", "path": str(second)}))
            new = publisher_of(gw)
            assert new is not pub
            later = await send_requests(gw, 5)
            await wait_for(lambda: pub.sent == 10 and new.sent == 5)
    assert [orjson.loads(x)["request_id"] for x in first.read_bytes().splitlines()] == ids
    assert [orjson.loads(x)["request_id"] for x in second.read_bytes().splitlines()] == later
