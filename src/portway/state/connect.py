"""One place that turns a Redis URL into a redis-py asyncio client: standalone, Cluster or
Sentinel.

URL forms (``state.redis_url``, plugin ``redis.url``, the ``publish`` plugin's
``redis_stream`` sink):

- ``redis://[:password@]host:port/db`` (``rediss://`` for TLS, ``unix://``): one server;
  with ``cluster=True`` (``state.cluster: true``) the same URL names a seed node of a Redis
  Cluster instead;
- ``redis+cluster://[:password@]host:port[,host:port...]`` (``rediss+cluster://``): a Redis
  Cluster, the listed nodes being seeds (the client discovers the others and follows
  MOVED/ASK redirections);
- ``redis+sentinel://[:password@]host:port[,host:port...]/master_name[/db]``: the primary
  that the Sentinels name ``master_name``, re-resolved after a failover.

Multi-key scripts need their keys in one hash slot on a Cluster: every key Portway builds
for one script shares a ``{...}`` hash tag (see ``docs/deployment.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
PLAIN_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL (what kind of deployment, where)."""

    kind: str  # "single" | "cluster" | "sentinel"
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str, *, cluster: bool = False) -> RedisTarget:
    """Parse and check ``url``; raises ValueError with a message fit for a config error."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"redis URL {url!r} has no scheme (redis://, redis+cluster://, ...)")
    scheme = scheme.lower()
    if scheme in PLAIN_SCHEMES:
        if not cluster:
            return RedisTarget("single", url, tls=scheme == "rediss")
        if scheme == "unix":
            raise ValueError("a Redis Cluster is not reached through a unix socket")
        scheme = "rediss+cluster" if scheme == "rediss" else "redis+cluster"
    if scheme not in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
        raise ValueError(
            f"unsupported redis URL scheme {scheme!r}: use redis://, rediss://, unix://, "
            "redis+cluster:// or redis+sentinel://"
        )
    creds, at, hosts_and_path = rest.rpartition("@")
    if not at:
        creds, hosts_and_path = "", rest
    hosts, _, path = hosts_and_path.partition("/")
    nodes: list[tuple[str, int]] = []
    default_port = 26379 if scheme in SENTINEL_SCHEMES else 6379
    for h in hosts.split(","):
        h = h.strip()
        if not h:
            continue
        u = urlsplit("//" + h)
        try:
            port = u.port or default_port
        except ValueError:
            raise ValueError(f"bad port in redis URL node {h!r}") from None
        nodes.append((u.hostname or "127.0.0.1", port))
    if not nodes:
        raise ValueError(f"redis URL {url!r} names no host")
    user, _, password = creds.partition(":") if creds else ("", "", "")
    parts = [p for p in path.split("/") if p]
    tls = scheme.startswith("rediss")
    common: dict[str, Any] = {
        "url": url,
        "nodes": tuple(nodes),
        "username": unquote(user) or None,
        "password": unquote(password) or None,
        "tls": tls,
    }
    if scheme in CLUSTER_SCHEMES:
        if parts and parts != ["0"]:
            raise ValueError("a Redis Cluster has only database 0")
        return RedisTarget("cluster", **common)
    if not parts:
        raise ValueError(
            "a sentinel URL names the monitored primary: redis+sentinel://host:port/mymaster/0"
        )
    try:
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(f"bad database number {parts[1]!r} in redis URL") from None
    return RedisTarget("sentinel", master=unquote(parts[0]), db=db, **common)


def state_redis_url(state: Any, default: str = "redis://127.0.0.1:6379/0") -> str:
    """The Redis URL of a ``state`` config section with its ``cluster`` flag applied (a
    plain ``redis://`` URL becomes ``redis+cluster://``), for stores that default to it."""
    url = getattr(state, "redis_url", None)
    if not isinstance(url, str) or not url:
        return default
    if getattr(state, "cluster", False) is True:
        scheme, sep, rest = url.partition("://")
        if sep and scheme.lower() in ("redis", "rediss"):
            return f"{scheme.lower()}+cluster://{rest}"
    return url


async def drop_connections(client: Any) -> None:
    """Close every pooled connection of ``client`` (a server restarted: they are all dead);
    the next command opens fresh ones. A Cluster client has one pool per node and no
    ``connection_pool``: closing it drops them all and makes it rediscover the topology."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        await pool.disconnect()
    else:
        await client.aclose()


def redis_client(url: str, *, cluster: bool = False, **kwargs: Any) -> Any:
    """A redis-py asyncio client for ``url`` (see the module docstring); ``kwargs`` go to the
    connections (timeouts, retry). Performs no I/O."""
    t = parse_redis_url(url, cluster=cluster)
    if t.kind == "single":
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(url, **kwargs)
    auth: dict[str, Any] = {}
    if t.username:
        auth["username"] = t.username
    if t.password:
        auth["password"] = t.password
    if t.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        # connection-level options the cluster client does not take (it retries per its
        # ``retry`` and refreshes its slot map on MOVED/ASK instead)
        for k in ("health_check_interval", "retry_on_timeout"):
            kwargs.pop(k, None)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in t.nodes],
            ssl=t.tls,
            **auth,
            **kwargs,
        )
    from redis.asyncio.sentinel import Sentinel

    sentinel = Sentinel(
        list(t.nodes),
        sentinel_kwargs={
            k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")
        },
        **kwargs,
    )
    return sentinel.master_for(t.master, db=t.db, ssl=t.tls, **auth)
