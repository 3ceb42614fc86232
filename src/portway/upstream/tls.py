"""TLS to upstream targets: one client context per upstream, built from ``upstreams[].tls``.

The pool opens connections with ``loop.create_connection(ssl=context, server_hostname=host)``;
everything TLS-specific happens in the context it is given, so the pool stays unaware of it:

* verification is on unless ``verify: false`` (system CAs, or ``ca``), with the host name
  checked against ``server_name`` when set (also sent as SNI), else the target's host;
* ``client_cert``/``client_key`` are presented when the upstream asks (mTLS);
* sessions are resumed: the last session a target gave is offered on the next connection to it
  (TLS 1.2 session ids/tickets, TLS 1.3 tickets), which saves a full handshake per new
  connection; idle connections themselves are reused by the pool;
* a failed verification is logged with OpenSSL's reason and the target; the client gets the
  generic 502 JSON of a connect failure (the error is an ``OSError`` like a refused connect).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from portway.config.schema import UpstreamTlsConfig

log = logging.getLogger("portway.upstream.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class _LoggedSSLObject(ssl.SSLObject):
    """Names the verification failure in the log before the connect error propagates."""

    upstream = ""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except ssl.SSLCertVerificationError as e:
            log.error(
                "TLS verification of upstream %s (%s) failed: %s",
                self.upstream,
                self.server_hostname,
                e.verify_message or e.reason,
            )
            raise
        except ssl.SSLError as e:
            if not isinstance(e, ssl.SSLWantReadError | ssl.SSLWantWriteError):
                log.error(
                    "TLS handshake with upstream %s (%s) failed: %s",
                    self.upstream,
                    self.server_hostname,
                    e.reason or e,
                )
            raise


class UpstreamSSLContext(ssl.SSLContext):
    """A client context that overrides the SNI/verified name and resumes sessions.

    ``wrap_bio`` is what asyncio (and uvloop) call per connection; ``server_name`` replaces
    the host they pass, and the session of the previous connection to the same name is offered.
    """

    server_name: str | None = None
    upstream: str = ""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        name = self.server_name or server_hostname
        key = str(name)
        sessions: dict[str, ssl.SSLObject] = self.__dict__.setdefault("_last", {})
        prev = sessions.get(key)
        if session is None and prev is not None:
            s = _session_of(prev)
            if s is not None:
                session = s
        obj = super().wrap_bio(incoming, outgoing, server_side, name, session)
        obj.upstream = self.upstream  # type: ignore[attr-defined]
        sessions[key] = obj
        return obj


def _session_of(obj: ssl.SSLObject) -> ssl.SSLSession | None:
    try:
        s = obj.session
    except (ValueError, ssl.SSLError):
        return None
    # TLS 1.3 tickets arrive after the handshake: a session without one cannot be resumed
    if s is None or not (s.has_ticket or s.id):
        return None
    return s


def client_context(upstream: str, cfg: UpstreamTlsConfig | None) -> ssl.SSLContext:
    """The context of ``https://`` targets of ``upstream`` (``cfg=None``: the defaults)."""
    cfg = cfg or UpstreamTlsConfig()
    ctx = UpstreamSSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.sslobject_class = _LoggedSSLObject
    ctx.upstream = upstream
    ctx.server_name = cfg.server_name
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    ctx.set_alpn_protocols(["http/1.1"])
    if cfg.verify:
        if cfg.ca:
            ctx.load_verify_locations(cfg.ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.client_cert and cfg.client_key:
        ctx.load_cert_chain(cfg.client_cert, cfg.client_key)
    return ctx


def attach(pool: Any, upstream: str, cfg: UpstreamTlsConfig | None) -> None:
    """Give an ``https`` pool the upstream's context (the pool's own default is unverified
    by name overrides and never resumes sessions)."""
    if getattr(pool, "_ssl", None) is not None:
        pool._ssl = client_context(upstream, cfg)
