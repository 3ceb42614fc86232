"""Client address resolution through trusted proxies (X-Forwarded-For)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from portway.http.headers import Headers


class TrustedProxies:
    """Decides whether a peer's X-Forwarded-* may be believed and who the real client is.

    The client is the right-most X-Forwarded-For address that is not itself a trusted proxy
    (the left part of the list is client-supplied and never trusted).
    """

    def __init__(self, cidrs: Sequence[str]) -> None:
        self._nets = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._cache = lru_cache(maxsize=4096)(self._trusted)

    def __bool__(self) -> bool:
        return bool(self._nets)

    def _trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.strip().strip("[]"))
        except ValueError:
            return False
        return any(addr in n for n in self._nets)

    def trusted(self, ip: str) -> bool:
        return bool(self._nets) and self._cache(ip)

    def client_ip(self, peer: str, headers: Headers) -> tuple[str, bool]:
        """(client ip, peer is trusted)."""
        if not self._nets or not self._cache(peer):
            return peer, False
        xff = headers.get_all("x-forwarded-for")
        if not xff:
            return peer, True
        hops = [h.strip() for v in xff for h in v.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._cache(hop):
                try:
                    return str(ipaddress.ip_address(hop.strip("[]"))), True
                except ValueError:
                    return peer, True
        return (hops[0] if hops else peer), True


class ForwardMemo:
    """The X-Forwarded-*/Via bytes last added to a request of one client connection, and
    what they depended on besides the connection itself (``forward_header_lines`` in
    ``portway.proxy.forward``): keep-alive requests of a connection usually repeat them, and
    a few comparisons cost less than the shared memo's tuple key."""

    __slots__ = ("client_ip", "host", "tail", "version", "via")

    def __init__(self) -> None:
        self.tail = b""  # b"": nothing remembered yet
        self.host: bytes | None = None
        self.version = ""
        self.client_ip = ""
        self.via: bytes | None = None
