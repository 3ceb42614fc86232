"""The lite upstream head (``forwarding.forward_lite_lines``) against the field-by-field one.

A head the lite parser read (``http/serverlite.py``) goes upstream with the client's own
field lines copied as runs of the bytes it sent; anything it does not write is written
field by field (``forward_header_lines``), as before. The same requests go through one
gateway twice, on the task-free path: as it runs, and with the loop's lite parser off
(every head parsed field by field, so never a lite head). The upstream must receive the
same request line and the same fields — names compared case-insensitively, values without
OWS, in the same order — for every head and route setting: the client's X-Forwarded-*
(trusted and not), Host rewritten or preserved, plugin edits (``request_id``,
``key_auth``), duplicate fields, odd spellings and OWS, lines the rules cut in the middle.
The client's spelling of names is what tells the lite head was used (docs/architecture.md
"The lite upstream request head").
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portway.http.serverlite import hooks_for
from tests.helpers import ServingPath, raw_upstream, run_gateway, simple_config

#: the requests (one read each, so the lite parser takes those it can); ``{}``: where
#: ``key_auth`` routes get their key line
HEADS: list[bytes] = [
    b"GET /a HTTP/1.1\r\nHost: api.test\r\n{}User-Agent: t\r\nAccept: */*\r\n\r\n",
    # (``key_auth`` copies a request with a query: its key may be there)
    b"GET /a?q=1 HTTP/1.1\r\nHost: api.test\r\n{}User-Agent: t\r\nAccept: */*\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}X-Forwarded-For: 10.9.9.9\r\nX-Real-IP: 1.2.3.4\r\n"
    b"Accept: a\r\nX-Forwarded-For: 10.8.8.8, 10.7.7.7\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n{}Accept: a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}Cookie: a=1\r\nCookie: b=2\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
    b"GET /a HTTP/1.1\r\nhOsT:  h \t\r\n{}uSeR-aGeNt:\tx  \r\nACCEPT:*/*\r\nX-E:\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}X-A:  1 \r\nConnection: Keep-Alive\r\nTE: trailers\r\n\r\n",
    b"GET /a HTTP/1.1\r\nAccept: a\r\n{}Host: h\r\nX-B: 2\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}Via: 1.1 edge\r\nAccept: a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}X-Request-ID: abc-1\r\nAccept: a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}X-Consumer-Username: root\r\nX-Consumer-ID: 7\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}X_Under: 1\r\nAccept: a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}Keep-Alive: timeout=5\r\nProxy-Authorization: x\r\n"
    b"Accept: a\r\nTE: trailers\r\nExpect: 100-continue\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}Accept: a\r\nX-Portway-Debug: 1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h:8080\r\n{}\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\n{}X-A: 1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}Forwarded: for=1.1.1.1\r\nX-Forwarded-Host: o\r\n"
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\nAccept: a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}Connection: keep-alive\r\nClose: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n{}HTTP2-Settings: AAA\r\nX-A: 1\r\n\r\n",
    # targets normalised (the upstream's request line is then not the client's)
    b"GET /a/../b/./c//d HTTP/1.1\r\nHost: h\r\n{}\r\n",
    b"GET /x%41%7e?k=%41 HTTP/1.1\r\nHost: h\r\n{}\r\n",
    b"GET /p%3a%3A HTTP/1.1\r\nHost: h\r\n{}\r\n",
    b"GET /p? HTTP/1.1\r\nHost: h\r\n{}\r\n",
    b"GET /p?a=1?b=2&c HTTP/1.1\r\nHost: h\r\n{}\r\n",
    b"DELETE /d?x HTTP/1.1\r\nHost: h\r\n{}\r\n",
]

CONSUMERS = [{"username": "alice", "credentials": {"key_auth": [{"key": "alice-key"}]}}]
SETTINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "preserve_host": {"route": {"preserve_host": True}},
    "trusted": {"server": {"trusted_proxies": ["127.0.0.1/32"]}},
    "no_via": {"server": {"via": None}},
    "underscores": {"listener": {"underscores_in_headers": True}},
    "request_id": {"route": {"plugins": [{"name": "request_id"}]}},
    "rewrite": {"route": {"rewrite": "/up/x"}},
    "key_auth": {
        "route": {"plugins": [{"name": "key_auth", "config": {"headers": ["apikey"]}}]},
        "consumers": CONSUMERS,
        "key": b"apikey: alice-key\r\n",
    },
    "key_auth_kept": {
        "route": {
            "plugins": [
                {"name": "key_auth", "config": {"headers": ["apikey"], "hide_credentials": False}}
            ]
        },
        "consumers": CONSUMERS,
        "key": b"APIKEY: alice-key\r\n",
    },
}


def _fields(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The request line and the fields (lower-cased names, values without OWS; the
    gateway's own request id replaced: a new one per request)."""
    lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    out = []
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        k, v = k.lower(), v.strip(b" \t")
        if k == b"x-request-id" and v != b"abc-1":
            v = b"ID"
        out.append((k, v))
    return lines[0], out


async def _send(port: int, heads: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for head in heads:
            writer.write(head)
            got = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert got.startswith(b"HTTP/1.1 204 "), got
    finally:
        writer.close()


@pytest.mark.parametrize("setting", sorted(SETTINGS))
async def test_upstream_gets_the_same_fields(setting: str) -> None:
    s = SETTINGS[setting]
    heads = [h.replace(b"{}", s.get("key", b"")) for h in HEADS]
    seen: list[bytes] = []

    async def upstream(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        seen.append(head)
        w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await w.drain()
        return True

    path = ServingPath("warm")
    cfg = simple_config("http://placeholder", **s.get("route", {}))
    if "server" in s:
        cfg["server"] = s["server"]
    if "listener" in s:
        cfg["listeners"] = [{"name": "public", **s["listener"]}]
    if "consumers" in s:
        cfg["consumers"] = s["consumers"]
    hooks = hooks_for(asyncio.get_running_loop())
    lite = hooks.lite
    async with raw_upstream(upstream) as url:
        cfg["upstreams"]["u"]["targets"][0]["url"] = url
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw, status=204)
            start = len(seen)
            await _send(gw.port, heads)
            with_lite = seen[start:]
            hooks.lite = None  # every head parsed field by field: no lite head
            try:
                await _send(gw.port, heads)
            finally:
                hooks.lite = lite
            without = seen[start + len(heads) :]
            path.assert_served(2 * len(heads))
    assert len(with_lite) == len(without) == len(heads)
    for head, a, b in zip(heads, with_lite, without, strict=True):
        assert _fields(a) == _fields(b), (head, a, b)
    # the usual head was copied (the client's spelling), the field-by-field one lower-cased
    assert b"\r\nUser-Agent: t\r\nAccept: */*\r\n" in with_lite[0], with_lite[0]
    assert b"\r\nuser-agent: t\r\naccept: */*\r\n" in without[0], without[0]
