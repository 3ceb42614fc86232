"""Config of ``ip_restriction``."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from portway.pipeline.plugin import PluginConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(v: str) -> Network:
    """A CIDR or a single address; an IPv4-mapped IPv6 range (``::ffff:10.0.0.0/104``) becomes
    the IPv4 range it maps, so it matches however the client's address is written."""
    try:
        net = ipaddress.ip_network(v.strip(), strict=False)
    except ValueError as e:
        raise ValueError(f"invalid CIDR {v!r}: {e}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    return net


class IpRestrictionConfig(PluginConfig):
    """Allow and deny lists of CIDRs; a client matching ``deny`` is refused even when it also
    matches ``allow``; with a non-empty ``allow``, everything else is refused."""

    allow: list[str] = Field(default_factory=list, description="CIDRs or addresses allowed")
    deny: list[str] = Field(default_factory=list, description="CIDRs or addresses refused")
    status: int = Field(403, ge=400, le=599, description="status of the refusal")
    message: str = Field("your IP address is not allowed", description="error message")

    @field_validator("allow", "deny")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            parse_network(c)
        return v

    @model_validator(mode="after")
    def _some(self) -> IpRestrictionConfig:
        if not self.allow and not self.deny:
            raise ValueError("set allow, deny or both")
        return self
