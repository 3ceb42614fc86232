"""The ``mtls_auth`` plugin."""

from __future__ import annotations

from typing import Any, ClassVar

from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginConfig
from portway.plugins._identity.base import IdentityPlugin
from portway.plugins._identity.credentials import MtlsEntry
from portway.plugins._identity.dn import cert_sans, cert_subject, dn_key, san_key
from portway.plugins._identity.errors import missing, unauthorized
from portway.plugins._identity.hashing import credential_id
from portway.plugins.mtls_auth.config import MtlsAuthConfig


class MtlsAuthPlugin(IdentityPlugin[MtlsAuthConfig]):
    """Maps the client certificate verified by the TLS listener to a consumer.

    Reads ``ctx.extra["peercert"]`` (the ``getpeercert()`` dict the listener stores only for
    a *verified* certificate); no certificate → 401. The subject DN is compared in canonical
    form (attribute order and long/short names do not matter), SANs case-insensitively.
    The certificate's subject and SANs are exposed as ``consumer.claims``.
    """

    name = "mtls_auth"
    scheme = "Certificate"
    Config: ClassVar[type[PluginConfig]] = MtlsAuthConfig

    def _lookup(self, cert: dict[str, Any]) -> tuple[Consumer, MtlsEntry] | None:
        for how in self.config.match:
            keys: list[str] = []
            if how == "subject":
                dn = cert_subject(cert)
                if dn is not None:
                    keys.append(dn_key(dn))
            else:
                keys.extend(san_key(s) for s in cert_sans(cert))
            for k in keys:
                hit = self.env.consumers.by_credential("mtls", k)
                if hit is not None and isinstance(hit[1], MtlsEntry):
                    return hit[0], hit[1]
        return None

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        cert = ctx.extra.get("peercert")
        if not isinstance(cert, dict) or not cert:
            raise missing(self._challenges, self.name)
        dn = cert_subject(cert)
        sans = cert_sans(cert)
        claims: dict[str, Any] = {
            "subject": ",".join(f"{k}={v}" for k, v in dn) if dn else None,
            "san": sans,
        }
        hit = self._lookup(cert)
        if hit is not None:
            c, entry = hit
            return Consumer(
                id=c.id,
                username=c.username,
                groups=c.groups,
                credential=entry.credential,
                claims=claims,
            )
        if self.config.allow_unmapped:
            cn = next((v for k, v in dn or () if k == "CN"), None) or (sans[0] if sans else None)
            if cn:
                cred = credential_id(self.name, dn_key(dn) if dn else san_key(cn))
                return Consumer(id=cn, username=cn, credential=cred, claims=claims)
        raise unauthorized(self._challenges, self.name)
