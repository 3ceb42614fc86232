"""DNS service discovery: A/AAAA or SRV records, refreshed periodically.

A name starting with ``_`` (``_http._tcp.orders.internal``) is looked up as SRV: only the
records of the lowest priority are used (RFC 2782: higher priorities are fallbacks), each with
its SRV weight (0 counts as 1, since weight 0 means "never" in Portway) and port; SRV target
names are resolved through the answer's additional section, else A/AAAA lookups. Other names
are looked up as A and AAAA with ``discovery.port``.

Without ``nameserver`` A/AAAA go through the system resolver (``loop.getaddrinfo``, so
``/etc/hosts`` works) and SRV through dnspython configured from ``/etc/resolv.conf``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from portway.config.schema import DiscoveryConfig
from portway.tasks import stop_task

if TYPE_CHECKING:
    # dnspython is imported when a resolver is first used (~10 MB of a worker's memory that
    # a gateway without DNS discovery never needs)
    import dns.asyncresolver

log = logging.getLogger("portway.upstream")

#: per-lookup time limit, so a dead nameserver cannot stall a refresh for long
LOOKUP_TIMEOUT = 2.0


class DiscoveryError(Exception):
    """The name did not resolve to any address (the last good set is kept)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    weight: int = 1


def _split_hostport(v: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    if not sep:
        return v, 53
    return host.strip("[]"), int(port)


class DnsResolver:
    """Resolves a :class:`DiscoveryConfig` to a sorted, de-duplicated list of endpoints.

    Raises :class:`DiscoveryError` when nothing usable came back (NXDOMAIN, no records, every
    lookup failed or timed out).
    """

    def __init__(self, cfg: DiscoveryConfig, timeout: float = LOOKUP_TIMEOUT) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self._dns: dns.asyncresolver.Resolver | None = None
        if cfg.nameserver is not None:
            import dns.asyncresolver

            host, port = _split_hostport(cfg.nameserver)
            r = dns.asyncresolver.Resolver(configure=False)
            r.nameservers = [host]
            r.port = port
            self._dns = r
        if self._dns is not None:
            self._dns.timeout = timeout
            self._dns.lifetime = timeout

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            import dns.asyncresolver

            r = dns.asyncresolver.Resolver()
            r.timeout = self.timeout
            r.lifetime = self.timeout
            self._dns = r
        return self._dns

    @property
    def default_port(self) -> int:
        if self.cfg.port is not None:
            return self.cfg.port
        return 443 if self.cfg.scheme == "https" else 80

    async def resolve(self) -> list[Endpoint]:
        name = self.cfg.dns
        if name.startswith("_"):
            eps = await self._srv(name)
        else:
            eps = [Endpoint(ip, self.default_port) for ip in await self._addresses(name)]
        if not eps:
            raise DiscoveryError(f"{name} resolved to no addresses")
        return sorted(set(eps), key=lambda e: (e.host, e.port))

    async def _addresses(self, name: str) -> list[str]:
        if self.cfg.nameserver is None:
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.timeout):
                    infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            except (OSError, TimeoutError) as e:
                raise DiscoveryError(f"{name}: {e}") from e
            return list(dict.fromkeys(str(i[4][0]) for i in infos))
        import dns.exception
        import dns.resolver

        out: list[str] = []
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                ans = await self._resolver().resolve(name, rdtype, search=False)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN) as e:
                errors.append(f"{rdtype}: {type(e).__name__}")
                continue
            except dns.exception.DNSException as e:
                raise DiscoveryError(f"{name} {rdtype}: {e}") from e
            out.extend(r.to_text() for r in ans)
        if not out:
            raise DiscoveryError(f"{name}: {', '.join(errors)}")
        return out

    async def _srv(self, name: str) -> list[Endpoint]:
        import dns.exception
        import dns.rdatatype

        try:
            ans = await self._resolver().resolve(name, "SRV", search=False)
        except dns.exception.DNSException as e:
            raise DiscoveryError(f"{name} SRV: {e}") from e
        records = list(ans)
        if not records:
            raise DiscoveryError(f"{name}: no SRV records")
        best = min(r.priority for r in records)
        # addresses the server volunteered in the additional section
        glue: dict[str, list[str]] = {}
        for rrset in ans.response.additional:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                glue.setdefault(rrset.name.to_text(), []).extend(r.to_text() for r in rrset)
        out: list[Endpoint] = []
        for r in records:
            if r.priority != best:
                continue
            target = r.target.to_text()
            if target == ".":
                # RFC 2782: "." means the service is decidedly not available here
                continue
            ips = glue.get(target)
            if ips is None:
                try:
                    ips = await self._addresses(target.rstrip("."))
                except DiscoveryError as e:
                    log.warning("SRV target %s of %s does not resolve: %s", target, name, e)
                    continue
            out.extend(Endpoint(ip, r.port, max(1, r.weight)) for ip in ips)
        return out


class Discovery:
    """Runs ``resolver.resolve()`` every ``cfg.refresh`` seconds and hands each successful
    answer to ``apply``; failures are logged (once per failure streak) and keep the last set."""

    def __init__(
        self,
        cfg: DiscoveryConfig,
        apply: Callable[[list[Endpoint]], None],
        resolver: DnsResolver | None = None,
    ) -> None:
        self.cfg = cfg
        self._apply = apply
        self.resolver = resolver or DnsResolver(cfg)
        self._task: asyncio.Task[None] | None = None
        self.failing = False
        self.last: list[Endpoint] | None = None

    async def refresh(self) -> bool:
        try:
            eps = await self.resolver.resolve()
        except DiscoveryError as e:
            if not self.failing:
                log.warning("discovery of %s failed, keeping the last set: %s", self.cfg.dns, e)
            self.failing = True
            return False
        if self.failing:
            log.info("discovery of %s recovered", self.cfg.dns)
        self.failing = False
        if eps != self.last:
            self.last = eps
            self._apply(eps)
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.refresh)
            try:
                await self.refresh()
            except Exception:
                log.exception("discovery of %s raised", self.cfg.dns)

    async def start(self) -> None:
        """First lookup (awaited, so the upstream starts with targets), then the loop."""
        if self._task is not None:
            return
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
