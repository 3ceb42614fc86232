"""Response hooks that only set fields (``pipeline/runner.py:FieldHooks``: ``rate_limit``'s
local store, ``request_id``) keep the lite response head on the task-free path: the
upstream's lines are relayed whole, lines of the names the hooks replace are dropped, and
the hooks' fields follow. The general path applies the same rule to parsed fields, so both
send the same bytes (apart from where Content-Length goes: the lite head relays the
upstream's line where it came, see docs/architecture.md "The lite response head")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portway.pipeline.plugin import Plugin, PluginConfig
from portway.pipeline.registry import registry
from tests.helpers import ServingPath, answering, raw_upstream, run_gateway, simple_config

#: the client's id: ``request_id`` keeps a well-formed one, so both paths echo the same
RID = b"rid-1"
#: one unit a second: after the n-th request of a run, ``t`` (seconds until the quota is
#: full again) is n less the run's time, rounded up: n on both paths (a run takes < 1 s)
RL: dict[str, Any] = {
    "name": "rate_limit",
    "config": {
        "key": ["ip"],
        "algorithm": "gcra",
        "limits": [{"rate": 3600, "per": "1h"}],
        "headers": "both",
    },
}
REQUEST_ID: dict[str, Any] = {"name": "request_id"}


class _NoteOnLog(Plugin[PluginConfig]):
    """A response hook that is no field hook (a coroutine ``on_response``): the route
    gives up the lite head and parses the upstream's fields, as before."""

    name = "t_plain_response_hook"
    Config = PluginConfig
    sync_hooks = True

    async def on_response(self, ctx: Any) -> None:
        assert ctx.response is not None
        ctx.response.headers.add_raw(b"x-plain-hook", b"1")


registry.register(_NoteOnLog)


def _head(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


async def _exchange(port: int, n: int) -> list[bytes]:
    """``n`` requests on one client connection; the raw response of each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        for _ in range(n):
            # (``X-RateLimit-Limit``: the id for a request_id binding that uses that name)
            writer.write(
                b"GET /x HTTP/1.1\r\nHost: a\r\nX-Request-ID: "
                + RID
                + b"\r\nX-RateLimit-Limit: "
                + RID
                + b"\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
            out.append(head + body)
    finally:
        writer.close()
    return out


async def _run(
    path: ServingPath, response: bytes, plugins: list[dict[str, Any]], n: int = 2
) -> list[bytes]:
    cfg = simple_config("http://placeholder", plugins=plugins)
    async with raw_upstream(answering(response)) as url:
        cfg["upstreams"]["u"]["targets"][0]["url"] = url
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw, status=int(response[9:12]))
            out = await _exchange(gw.port, n)
            path.assert_served(n)
    return out


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        out.append((k.lower(), v.strip()))
    return out


def _without_length(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"content-length:")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# lower-case names: the general path lower-cases them, the lite head keeps the upstream's
NO_BODY = b"HTTP/1.1 204 No Content\r\nserver: up\r\nx-a: 1\r\n\r\n"
REPLACED = (
    b"HTTP/1.1 204 No Content\r\nserver: up\r\nx-ratelimit-limit: 5\r\nx-request-id: up-id\r\n"
    b'ratelimit: "u";r=1;t=1\r\nx-a: 1\r\n\r\n'
)
WITH_BODY = b"HTTP/1.1 200 OK\r\nserver: up\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok"


@pytest.mark.parametrize(
    ("response", "plugins"),
    [
        (NO_BODY, [REQUEST_ID, RL]),
        (REPLACED, [REQUEST_ID, RL]),
        (NO_BODY, [RL]),
        # request_id's header is one rate_limit sets too: its echo runs last (response hooks
        # in reverse binding order) and replaces rate_limit's field, on both paths
        (REPLACED, [{"name": "request_id", "config": {"header": "x-ratelimit-limit"}}, RL]),
    ],
    ids=["plain", "upstream-fields-replaced", "rate-limit-only", "later-hook-wins"],
)
async def test_general_and_task_free_send_the_same_bytes(
    response: bytes, plugins: list[dict[str, Any]]
) -> None:
    cold = await _run(ServingPath("cold"), response, plugins)
    warm = await _run(ServingPath("warm"), response, plugins)
    assert warm == cold
    for raw in warm:
        fields = _fields(raw)
        names = [k for k, _ in fields]
        assert names.count(b"x-ratelimit-limit") == 1
        assert b'"u";r=1' not in raw
        # the upstream's X-Request-ID goes when request_id echoes under that name
        assert (b"up-id" in raw) == (response is REPLACED and plugins[0] is not REQUEST_ID)
        assert (b"server", b"up") in fields and (b"x-a", b"1") in fields
    echoed = {b"x-request-id": RID} if plugins[0] is REQUEST_ID else {}
    if len(plugins) == 2 and plugins[0] is not REQUEST_ID:
        echoed = {b"x-ratelimit-limit": RID}  # the later hook's field won
    for raw in warm:
        fields = dict(_fields(raw))
        assert {k: fields.get(k) for k in echoed} == echoed
    # each request took one unit: the second reports one less
    rem = [dict(_fields(raw))[b"x-ratelimit-remaining"] for raw in warm]
    assert rem == [b"3599", b"3598"]


async def test_with_a_body_only_content_length_moves() -> None:
    cold = await _run(ServingPath("cold"), WITH_BODY, [REQUEST_ID, RL])
    warm = await _run(ServingPath("warm"), WITH_BODY, [REQUEST_ID, RL])
    for c, w in zip(cold, warm, strict=True):
        assert c.endswith(b"\r\n\r\nok") and w.endswith(b"\r\n\r\nok")
        # the lite head relays the upstream's Content-Length where it came; the general
        # path puts its own last
        assert b"\r\nserver: up\r\ncontent-length: 2\r\nx-a: 1\r\n" in w
        assert c.split(b"\r\n\r\n")[0].endswith(b"\r\ncontent-length: 2")
        assert _without_length(w) == _without_length(c)


MIXED = (
    b"HTTP/1.1 200 OK\r\nServer: up\r\nX-Mixed-Case: A b\r\nX-RateLimit-Limit: 5\r\n"
    b"Content-Length: 2\r\nX-Request-Id: up-id\r\nX-Last: z\r\n\r\nok"
)


async def test_field_hooks_keep_the_upstreams_lines() -> None:
    """Warm, the upstream's spelling and order survive (the lite head); the lines the hooks
    replace are dropped in any spelling; the hooks' fields follow Via."""
    (raw,) = await _run(ServingPath("warm"), MIXED, [REQUEST_ID, RL], n=1)
    head = _head(raw)
    assert head.startswith(
        b"HTTP/1.1 200 OK\r\nServer: up\r\nX-Mixed-Case: A b\r\nContent-Length: 2\r\n"
        b"X-Last: z\r\nvia: 1.1 portway\r\nratelimit-policy: "
    ), head
    assert head.endswith(b"\r\nx-request-id: " + RID + b"\r\n\r\n"), head
    assert b"up-id" not in head and b": 5\r\n" not in head
    assert raw.endswith(b"\r\n\r\nok")


async def test_another_response_hook_parses_the_head_as_before() -> None:
    """A response hook that is not a field hook on the route: the head is parsed (names
    lower-cased), and the field hooks' fields are still set, in hook order."""
    plugins = [REQUEST_ID, RL, {"name": "t_plain_response_hook"}]
    cold = await _run(ServingPath("cold"), MIXED, plugins, n=1)
    (raw,) = await _run(ServingPath("warm"), MIXED, plugins, n=1)
    assert raw == cold[0]
    fields = _fields(raw)
    assert b"\r\nserver: up\r\nx-mixed-case: A b\r\n" in raw
    names = [k for k, _ in fields]
    assert names.index(b"x-plain-hook") < names.index(b"ratelimit") < names.index(b"x-request-id")
    assert (b"x-request-id", RID) in fields and (b"x-ratelimit-limit", b"3600") in fields
