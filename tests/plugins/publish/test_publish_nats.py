"""``publish`` with the NATS sink: core NATS and JetStream (with acks) against the NATS of
this machine (127.0.0.1:4222, JetStream on), and an outage of a private ``nats-server``
that loses nothing within the buffer while requests keep being served.

The broker on 4222 must be running: these tests fail (never skip) when it is not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import orjson
import pytest

from tests.helpers import run_gateway, run_upstream
from tests.plugins.publish.support import (
    NatsServer,
    check_event,
    gateway_config,
    publisher_of,
    send_requests,
    wait_for,
)

SHARED_NATS = "nats://127.0.0.1:4222"


@pytest.fixture
async def nc() -> AsyncIterator[Any]:
    client = await nats.connect(SHARED_NATS, connect_timeout=2, allow_reconnect=False)
    try:
        yield client
    finally:
        await client.close()


async def _stream_messages(js: Any, stream: str) -> list[dict[str, Any]]:
    """Every message the stream holds, read by sequence (no consumer needed)."""
    state = (await js.stream_info(stream)).state
    out: list[dict[str, Any]] = []
    for seq in range(state.first_seq, state.last_seq + 1):
        out.append(orjson.loads((await js.get_msg(stream, seq)).data))
    return out


async def test_core_nats_one_event_per_request(nc: Any) -> None:
    token = uuid.uuid4().hex[:10]
    got: list[tuple[str, dict[str, Any]]] = []

    async def on_msg(msg: Any) -> None:
        got.append((msg.subject, orjson.loads(msg.data)))

    await nc.subscribe(f"pwtest.{token}.>", cb=on_msg)
    await nc.flush()
    async with run_upstream() as up:
        cfg = gateway_config(
            up.url, {"sink": "nats", "url": SHARED_NATS, "subject": f"pwtest.{token}.{{route}}"}
        )
        async with run_gateway(cfg) as gw:
            ids = await send_requests(gw, 30)
            await wait_for(lambda: len(got) >= 30)
            assert publisher_of(gw).sent == 30
    await nc.flush()
    assert len(got) == 30
    assert sorted(ev["request_id"] for _, ev in got) == sorted(ids)
    for subject, ev in got:
        assert subject == f"pwtest.{token}.r"
        check_event(ev)


async def test_jetstream_acked_one_event_per_request(nc: Any) -> None:
    token = uuid.uuid4().hex[:10]
    js = nc.jetstream()
    stream = f"PWTEST_{token}"
    await js.add_stream(name=stream, subjects=[f"pwjs.{token}.>"])
    try:
        async with run_upstream() as up:
            cfg = gateway_config(
                up.url, {"sink": "nats", "url": SHARED_NATS, "subject": f"pwjs.{token}.{{route}}"}
            )
            async with run_gateway(cfg) as gw:
                ids = await send_requests(gw, 40)
                pub = publisher_of(gw)
                await wait_for(lambda: pub.sent == 40)

                async def stored() -> bool:
                    return int((await js.stream_info(stream)).state.messages) >= 40

                await wait_for(stored)
        events = await _stream_messages(js, stream)
        assert sorted(ev["request_id"] for ev in events) == sorted(ids)
        for ev in events:
            check_event(ev)
    finally:
        await js.delete_stream(stream)


async def test_nats_outage_loses_nothing_and_requests_stay_served() -> None:
    server = NatsServer()
    server.start()
    try:
        nc = await nats.connect(server.url, allow_reconnect=False)
        js = nc.jetstream()
        await js.add_stream(name="CALLS", subjects=["calls.>"], storage="file")
        await nc.close()
        async with run_upstream() as up:
            cfg = gateway_config(
                up.url, {"sink": "nats", "url": server.url, "subject": "calls.{route}"}
            )
            async with run_gateway(cfg) as gw:
                pub = publisher_of(gw)
                before = await send_requests(gw, 20)
                await wait_for(lambda: pub.sent == 20)

                server.stop()
                down_at = asyncio.get_running_loop().time()
                during = await send_requests(gw, 60)
                # every one of them was answered while the broker was down
                assert not server.running
                assert pub.sent == 20
                # keep it down ~5 s, long enough for several failed, backed-off retries
                await wait_for(lambda: pub.failing)
                await asyncio.sleep(max(0.0, 5.0 - (asyncio.get_running_loop().time() - down_at)))
                assert pub.sent == 20 and not pub.dropped

                server.start()
                after = await send_requests(gw, 20)
                await wait_for(lambda: pub.sent >= 100, timeout=30)
                assert not pub.dropped
        nc = await nats.connect(server.url, allow_reconnect=False)
        try:
            js = nc.jetstream()
            events = await _stream_messages(js, "CALLS")
        finally:
            await nc.close()
        # nothing lost; JetStream dropped any resend by its Nats-Msg-Id (the request id)
        assert sorted(ev["request_id"] for ev in events) == sorted(before + during + after)
    finally:
        server.close()
