"""A fake GatewayControl (real config validation, no data plane) and request helpers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from portway.admin.app import AdminApp
from portway.admin.control import check_consumers
from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.config.schema import AdminConfig, GatewayConfig, RouteConfig
from portway.http.body import BodyStream
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.routing.router import Router
from portway.upstream.upstream import Upstream

TOKEN = "admin-token-123"
AUTH = [("authorization", f"Bearer {TOKEN}")]

BASE_YAML = """\
upstreams:
  users:
    targets:
      - url: http://127.0.0.1:9001
      - url: http://127.0.0.1:9002
    retries: {on: [connect_error, "502"]}
routes:
  - name: users
    match: {paths: [/users], methods: [GET, POST]}
    upstream: users
    plugins:
      - name: key_auth
  - name: health
    match: {paths: ["=/health"]}
    upstream: users
consumers:
  - username: alice
    groups: [staff]
    credentials:
      key_auth:
        - key: ${ALICE_KEY:-alice-key}
server:
  debug_token: dbg-secret
"""


class FakeControl:
    """GatewayControl over the real loader; 'applying' swaps the config and upstreams."""

    def __init__(self, text: str = BASE_YAML, *, config_path: str | None = None) -> None:
        self.config_path = config_path
        self._text = text
        self._cfg = load_config_text(text)
        self._ups = self._build_upstreams(self._cfg)
        self.applied: list[str] = []
        self.shared: list[dict[str, Any]] = []
        self.written: list[str] = []
        self.apply_delay = 0.0
        self.active_applies = 0
        self.max_concurrent_applies = 0
        self.last_reload: dict[str, Any] = {"result": "none", "errors": [], "at": None}

    @staticmethod
    def _build_upstreams(cfg: GatewayConfig) -> dict[str, Upstream]:
        return {n: Upstream(n, u) for n, u in cfg.upstreams.items()}

    def config(self) -> GatewayConfig:
        return self._cfg

    def config_text(self) -> str:
        return self._text

    async def validate_config_text(self, text: str) -> list[Any]:
        try:
            cfg = load_config_text(text)
        except ConfigError as e:
            return list(e.errors)
        return check_consumers(cfg)

    async def apply_config_text(self, text: str, *, write_back: bool) -> list[Any]:
        self.active_applies += 1
        self.max_concurrent_applies = max(self.max_concurrent_applies, self.active_applies)
        try:
            try:
                cfg = load_config_text(text)
            except ConfigError as e:
                self.last_reload = {"result": "error", "errors": list(e.errors), "at": 1.0}
                return list(e.errors)
            if errors := check_consumers(cfg):
                return errors
            # a slow build: a second writer must not interleave with this one
            await asyncio.sleep(self.apply_delay)
            self._cfg = cfg
            self._text = text
            self._ups = self._build_upstreams(cfg)
            self.applied.append(text)
            if write_back:
                self.written.append(text)
            self.last_reload = {"result": "ok", "errors": [], "at": 2.0}
            return []
        finally:
            self.active_applies -= 1

    async def reload(self) -> list[Any]:
        return await self.apply_config_text(self._text, write_back=False)

    def status(self) -> dict[str, Any]:
        h = hashlib.sha256(orjson.dumps(self._cfg.model_dump(mode="json"))).hexdigest()[:12]
        return {"workers": 2, "config_hash": h, "last_reload": self.last_reload}

    def upstreams(self) -> Mapping[str, Any]:
        return self._ups

    def route_table(self) -> list[tuple[int, str, RouteConfig]]:
        return Router(self._cfg.routes).table()

    async def share(self, op: dict[str, Any]) -> list[int]:
        self.shared.append(op)
        return []


def make_request(
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: list[tuple[str, str]] | None = None,
    content_type: str | None = None,
    auth: bool = True,
    query: bytes = b"",
) -> Request:
    h = list(AUTH if auth else [])
    if content_type is not None:
        h.append(("content-type", content_type))
    h += headers or []
    return Request(
        method=method,
        path=path,
        query=query,
        headers=Headers.from_pairs(h),
        body=BodyStream.of(body) if body is not None else None,
        content_length=len(body) if body is not None else None,
    )


def js(resp: Response) -> Any:
    assert isinstance(resp.body, bytes)
    return orjson.loads(resp.body) if resp.body else None


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
def app(control: FakeControl) -> AdminApp:
    cfg = AdminConfig.model_validate({"token": TOKEN, "address": "127.0.0.1:0"})
    return AdminApp(control, cfg)
