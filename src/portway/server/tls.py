"""TLS termination of a listener: certificates chosen by SNI, swapped on reload.

The asyncio server holds one *front* :class:`ssl.SSLContext` for its whole life. Its SNI
callback runs for every ClientHello (with ``server_name=None`` when the client sent none) and
moves the handshake onto the context of the chosen certificate: exact SAN, then a one-label
wildcard (``*.api.example.com``), else the default (the first certificate). A reload builds new
per-certificate contexts and replaces the lookup tables with plain assignments, so the next
ClientHello sees the new certificates while handshakes already past their ClientHello finish on
the context they started with; no socket is closed and no server is restarted.

OpenSSL copies some settings into a connection when it is created (protocol versions, cipher
list, verification mode, ticket options) and reads others from the context it ends on
(certificate, CA store used for client verification, ALPN). So every per-certificate context is
configured exactly like the front one, and a reload re-applies the settings to the front too.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from typing import Any

from prometheus_client import Gauge

from portway.config.certs import EXPIRY_WARNING_SECONDS, CertInfo, inspect_pair
from portway.config.schema import TlsConfig

log = logging.getLogger("portway.tls")

CERT_EXPIRY = Gauge(
    "portway_certificate_expiry_seconds",
    "notAfter of each certificate a TLS listener serves, as a Unix time in seconds "
    "(alert on portway_certificate_expiry_seconds - time() < 14 * 86400)",
    ["listener", "name"],
    multiprocess_mode="livemax",
)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def alpn_protocols(cfg: TlsConfig, http2: bool) -> list[str]:
    """The configured ALPN list; ``h2`` only when the listener serves HTTP/2."""
    out: list[str] = [p for p in cfg.alpn if http2 or p != "h2"]
    return out or ["http/1.1"]


def _configure(ctx: ssl.SSLContext, cfg: TlsConfig, http2: bool) -> None:
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    if cfg.ciphers != "default":
        ctx.set_ciphers(cfg.ciphers)
    ctx.set_alpn_protocols(alpn_protocols(cfg, http2))
    if cfg.client_ca:
        ctx.load_verify_locations(cfg.client_ca)
    ctx.verify_mode = _VERIFY[cfg.client_cert]
    if cfg.session_tickets:
        ctx.options &= ~ssl.OP_NO_TICKET
    else:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0


def _context(cfg: TlsConfig, http2: bool, info: CertInfo | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(ctx, cfg, http2)
    if info is not None:
        ctx.load_cert_chain(info.cert, info.key)
    return ctx


class ListenerTls:
    """The TLS state of one listener.

    ``front`` is given to the server once. :meth:`update` checks and loads a new set of
    certificates (raising :class:`~portway.config.certs.CertificateError` or
    :class:`ssl.SSLError` and changing nothing when one is unusable) and makes it the one new
    handshakes get. ``infos`` lists the certificates now served.
    """

    def __init__(self, listener: str, cfg: TlsConfig, http2: bool) -> None:
        self.listener = listener
        self.http2 = http2
        self.front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.front.sni_callback = self._on_sni
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wild: dict[str, ssl.SSLContext] = {}
        self._default: ssl.SSLContext = self.front
        self._pairs: list[tuple[ssl.SSLContext, CertInfo]] = []
        self.infos: list[CertInfo] = []
        self.cfg: TlsConfig | None = None
        self.update(cfg)

    def update(self, cfg: TlsConfig) -> None:
        infos = [inspect_pair(c.cert, c.key) for c in cfg.certificates]
        contexts = [_context(cfg, self.http2, i) for i in infos]
        exact: dict[str, ssl.SSLContext] = {}
        wild: dict[str, ssl.SSLContext] = {}
        for info, ctx in zip(infos, contexts, strict=True):
            for name in info.names:
                # a name served by two certificates goes to the one listed first
                (wild if name.startswith("*.") else exact).setdefault(name, ctx)
        # everything that can fail is done: from here the swap cannot half-happen
        _configure(self.front, cfg, self.http2)
        self.front.load_cert_chain(infos[0].cert, infos[0].key)
        self._exact, self._wild, self._default = exact, wild, contexts[0]
        self._pairs = list(zip(contexts, infos, strict=True))
        old = {i.label for i in self.infos}
        self.infos, self.cfg = infos, cfg
        self._publish(old)

    def select(self, server_name: str | None) -> ssl.SSLContext:
        """The context for a ClientHello's SNI: exact name, wildcard, then the default."""
        if server_name:
            host = server_name.lower().rstrip(".")
            ctx = self._exact.get(host)
            if ctx is not None:
                return ctx
            _, dot, rest = host.partition(".")
            if dot:
                ctx = self._wild.get("*." + rest)
                if ctx is not None:
                    return ctx
        return self._default

    def select_info(self, server_name: str | None) -> CertInfo:
        """The certificate :meth:`select` picks, as its files (the QUIC endpoint loads them:
        aioquic takes no ``SSLContext``)."""
        ctx = self.select(server_name)
        return next((i for c, i in self._pairs if c is ctx), self.infos[0])

    def _on_sni(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.select(server_name)

    def _publish(self, old_labels: set[str]) -> None:
        now = time.time()
        for label in old_labels - {i.label for i in self.infos}:
            with contextlib.suppress(KeyError):
                CERT_EXPIRY.remove(self.listener, label)
        for info in self.infos:
            CERT_EXPIRY.labels(self.listener, info.label).set(info.not_after)
            left = info.not_after - now
            if left < EXPIRY_WARNING_SECONDS:
                log.warning(
                    "certificate %s (%s) of listener %s expires in %.1f days",
                    info.label,
                    info.cert,
                    self.listener,
                    left / 86400,
                )


__all__ = ["ListenerTls", "alpn_protocols"]
