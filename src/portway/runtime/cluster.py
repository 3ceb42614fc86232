"""Config change notices between gateway instances through Redis.

When ``state.sync_config`` is on, a config applied through the admin API of any instance is
stored under ``<key_prefix>config:text`` and its hash published on ``<key_prefix>config``.
Every worker of every instance subscribes; on a notice whose hash differs from what it serves
it loads the stored text (same validation as a file reload) and applies it. Runtime changes
(target drains, cache purges) are published on the same channel as JSON objects; drains are
also kept in the hash ``<key_prefix>drains`` so an instance catches up on them. No protocol of our
own: Redis is the only shared medium. While Redis is unreachable instances keep serving what
they have and resubscribe with backoff; on (re)subscribe they catch up with the stored text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import orjson

from portway.config.schema import StateConfig
from portway.state.connect import redis_client, state_redis_url
from portway.tasks import stop_tasks

if TYPE_CHECKING:
    from portway.runtime.gateway import Gateway

log = logging.getLogger("portway.cluster")


class ConfigSync:
    """Publishes admin-applied configs and applies those published by other instances."""

    def __init__(self, gateway: Gateway, state: StateConfig) -> None:
        self.gateway = gateway
        self.channel = f"{state.key_prefix}config"
        self.text_key = f"{state.key_prefix}config:text"
        self.drains_key = f"{state.key_prefix}drains"
        #: set once the first subscription is up (tests wait on it)
        self.subscribed = asyncio.Event()
        self._redis = redis_client(
            state_redis_url(state), socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._task: asyncio.Task[None] | None = None
        self.applied = 0

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def publish(self, text: str) -> None:
        from portway.config.loader import config_hash, load_config_text

        digest = config_hash(load_config_text(text, "<admin>"))
        try:
            # two commands, not a MULTI (on a Redis Cluster PUBLISH has no slot to share
            # with the key); the SET completes first, so a woken peer reads the new text
            await self._redis.set(self.text_key, text.encode())
            await self._redis.publish(self.channel, digest.encode())
        except Exception as e:  # the local apply already happened; peers catch up later
            log.error("could not publish the config to Redis: %s", e)

    async def publish_op(self, op: dict[str, Any]) -> None:
        """Send a runtime change (a target drain, a cache purge) to every worker of every
        instance; the message is the op as a JSON object (a config notice is a bare hash)."""
        data = {k: v for k, v in op.items() if k != "from"}
        try:
            async with self._redis.pipeline(transaction=True) as p:
                if data.get("op") == "drain":
                    # kept, so an instance that was not listening catches up on (re)subscribe
                    field = f"{data['upstream']}|{data['target']}"
                    if data.get("draining"):
                        p.hset(self.drains_key, field, b"1")
                    else:
                        p.hdel(self.drains_key, field)
                p.publish(self.channel, orjson.dumps(data))
                await p.execute()
        except Exception as e:
            log.error("could not publish %s to Redis: %s", op.get("op"), e)

    async def _catch_up_drains(self) -> None:
        drains = await self._redis.hgetall(self.drains_key)
        for raw in drains:
            field = raw.decode() if isinstance(raw, bytes) else str(raw)
            upstream, _, target = field.partition("|")
            op = {"op": "drain", "upstream": upstream, "target": target, "draining": True}
            await self.gateway.apply_shared(op)

    async def _on_message(self, data: Any) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if isinstance(raw, bytes) and raw.startswith(b"{"):
            op = orjson.loads(raw)
            if isinstance(op, dict):
                # also this instance's own message: drains and purges are idempotent
                await self.gateway.apply_shared(op)
            return
        await self._catch_up()

    async def _catch_up(self) -> None:
        from portway.config.errors import ConfigError
        from portway.config.loader import config_hash, load_config_text

        raw = await self._redis.get(self.text_key)
        if raw is None:
            return
        try:
            text = raw if isinstance(raw, str) else raw.decode()
            cfg = load_config_text(text, "<redis>")
        except ConfigError as e:
            log.error("config published in Redis is invalid: %s", "; ".join(map(str, e.errors)))
            return
        if config_hash(cfg) == config_hash(self.gateway.config):
            return
        await self.gateway.apply(cfg)
        self.applied += 1
        log.info("applied config published by another instance (%s)", config_hash(cfg))

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self.channel)
                await self._catch_up()
                await self._catch_up_drains()
                self.subscribed.set()
                delay = 0.5
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        try:
                            await self._on_message(msg.get("data"))
                        except Exception as e:
                            log.error("applying a published config failed: %s", e)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("config sync: Redis unavailable (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def aclose(self) -> None:
        await stop_tasks(self._task)
        with contextlib.suppress(Exception):
            await self._redis.aclose()
