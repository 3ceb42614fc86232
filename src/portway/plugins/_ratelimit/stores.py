"""Shared Redis stores for the limiting plugins (one per URL and timeouts, across reloads)."""

from __future__ import annotations

from typing import Any

from portway.pipeline.plugin import PluginEnv
from portway.plugins._ratelimit.config import RedisOptions
from portway.state.redis import RedisStore

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _state_settings(env: PluginEnv) -> Any:
    return getattr(env.settings, "state", None)


def redis_url(env: PluginEnv, opts: RedisOptions) -> str:
    if opts.url:
        return opts.url
    from portway.state.connect import state_redis_url

    return state_redis_url(_state_settings(env), DEFAULT_URL)


def key_prefix(env: PluginEnv, opts: RedisOptions, suffix: str) -> str:
    if opts.key_prefix is not None:
        return opts.key_prefix
    state = _state_settings(env)
    base = getattr(state, "key_prefix", None)
    return (base if isinstance(base, str) else "portway:") + suffix


def shared_redis(env: PluginEnv, opts: RedisOptions) -> RedisStore:
    """The process-wide store for these options; survives reloads via ``env.shared``."""
    url = redis_url(env, opts)
    ident = f"state.redis|{url}|{opts.timeout}|{opts.backoff}|{opts.max_backoff}"
    return env.shared(
        ident,
        lambda: RedisStore(
            url,
            connect_timeout=opts.timeout,
            timeout=opts.timeout,
            backoff_min=opts.backoff,
            backoff_max=opts.max_backoff,
        ),
    )
