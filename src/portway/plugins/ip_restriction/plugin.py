"""``ip_restriction``: allow or refuse requests by client address."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from portway.errors import GatewayError
from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.ip_restriction.config import IpRestrictionConfig, parse_network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(req: Request) -> Address | None:
    """The request's client address as the gateway resolved it (``Request.client_ip``: the
    peer, or the X-Forwarded-For hop right of ``server.trusted_proxies`` when the peer is
    one of them), with an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, what a dual-stack
    listener reports for IPv4 peers) turned into its IPv4 address. ``None`` when it is not
    an address at all."""
    return parse_address(req.client_ip)


def parse_address(text: str) -> Address | None:
    s = text.strip().strip("[]")
    s = s.partition("%")[0]  # a zone id (fe80::1%eth0) does not change which range it is in
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class IpRestrictionError(GatewayError):
    status = 403
    code = "ip_restricted"


class IpRestrictionPlugin(Plugin[IpRestrictionConfig]):
    """Refuses a request whose client address (see :func:`client_address`) matches ``deny``,
    or matches nothing in a non-empty ``allow``, with ``status`` and the gateway's JSON error
    body. An address that cannot be parsed is refused. Decisions are memoised per address."""

    name = "ip_restriction"
    stage = Stage.edge
    Config = IpRestrictionConfig
    sync_hooks = True

    def __init__(self, config: IpRestrictionConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._allow = tuple(parse_network(c) for c in config.allow)
        self._deny = tuple(parse_network(c) for c in config.deny)
        self.allowed = lru_cache(maxsize=8192)(self._decide)

    def _decide(self, client_ip: str) -> bool:
        addr = parse_address(client_ip)
        if addr is None:
            return False
        # `in` is False across versions, so an IPv4 client never matches an IPv6 range
        if any(addr in n for n in self._deny):
            return False
        return not self._allow or any(addr in n for n in self._allow)

    async def on_request(self, ctx: RequestContext) -> Response | None:
        if not self.allowed(ctx.request.client_ip):
            c = self.config
            raise IpRestrictionError(c.message, status=c.status)
        return None
