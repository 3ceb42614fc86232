"""The HTTP/3 (QUIC) endpoint of a TLS listener with ``quic: true``.

A UDP socket on the listener's port (or ``quic_port``), bound with ``SO_REUSEPORT`` so the
workers share it as they share the TCP port, served by aioquic's ``QuicServer`` with
:class:`~portway.http.h3.H3Protocol` per connection: the same ``App`` as the TCP listener.

Certificates: QUIC gets the listener's *default* certificate (the first of
``tls.certificates``): aioquic picks the certificate before any application code sees the
ClientHello's server name, so there is no per-name choice. A reload reaches new connections:
when a connection is created the endpoint compares the :class:`ListenerTls`'s certificate
list with the one it loaded and, when the reload replaced it, loads the new default into the
shared ``QuicConfiguration`` (aioquic copies certificate and key into a connection on its
first datagram, so connections already established keep theirs).

aioquic is an optional dependency (``pip install 'portway[http3]'``); this module imports it
only when an endpoint is started, and the config schema refuses ``quic: true`` without it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from typing import TYPE_CHECKING, Any

from portway.config.schema import ListenerConfig
from portway.http.forwarded import TrustedProxies
from portway.http.limits import ServerLimits
from portway.http.server import App

if TYPE_CHECKING:
    from portway.server.listener import AcceptServer
    from portway.server.tls import ListenerTls

log = logging.getLogger("portway.quic")

#: how long a client may use the advertised alternative (RFC 7838 ``ma``, seconds)
ALT_SVC_MAX_AGE = 86400


def quic_port(cfg: ListenerConfig, tcp_port: int) -> int:
    """The UDP port of the listener's QUIC endpoint: ``quic_port``, else the TCP port."""
    return cfg.quic_port if cfg.quic_port is not None else tcp_port


def alt_svc_value(cfg: ListenerConfig, tcp_port: int) -> bytes | None:
    """The ``Alt-Svc`` field value the TCP listener advertises (RFC 7838, RFC 9114 §3.1.1),
    or ``None`` when the listener has no QUIC endpoint."""
    if not cfg.quic or cfg.tls is None:
        return None
    return b'h3=":%d"; ma=%d' % (quic_port(cfg, tcp_port), ALT_SVC_MAX_AGE)


def bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if hasattr(socket, "SO_REUSEPORT"):
        # the workers share the port; the kernel keeps a client's 4-tuple on one of them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class QuicEndpoint:
    """One listener's QUIC endpoint: :meth:`start`, :meth:`begin_drain`, :meth:`close`."""

    def __init__(
        self,
        cfg: ListenerConfig,
        tls: ListenerTls,
        app: App,
        limits_ref: Any,
        trusted_ref: Any,
    ) -> None:
        self.cfg = cfg
        self.tls = tls
        self.app = app
        self.limits_ref = limits_ref
        self.trusted_ref = trusted_ref
        self.port = 0
        self._server: Any = None
        self._configuration: Any = None
        self._infos: object = None
        #: this endpoint's connections (H3Protocol), for the close at shutdown
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        #: certificates loaded for aioquic, by (cert, key) path; emptied by a reload
        self._loaded: dict[tuple[str, str], tuple[Any, list[Any], Any]] = {}

    async def start(self, host: str, port: int) -> None:
        from aioquic.asyncio.server import QuicServer
        from aioquic.h3.connection import H3_ALPN
        from aioquic.quic.configuration import QuicConfiguration

        limits: ServerLimits = self.limits_ref()
        conf = QuicConfiguration(
            is_client=False,
            alpn_protocols=list(H3_ALPN),
            # 0 disables our idle close; QUIC needs a timeout, so aioquic's default stays
            idle_timeout=limits.idle_timeout if limits.idle_timeout > 0 else 60.0,
        )
        self._configuration = conf
        self._load_certificate()
        loop = asyncio.get_running_loop()
        sock = bind_udp(host, port)
        self.port = int(sock.getsockname()[1])
        _, self._server = await loop.create_datagram_endpoint(
            lambda: QuicServer(configuration=conf, create_protocol=self._protocol), sock=sock
        )

    def _load_certificate(self) -> None:
        """Load the listener's default certificate (again, after a reload replaced it)."""
        from aioquic.quic.configuration import QuicConfiguration

        infos = self.tls.infos
        first = infos[0]
        fresh = QuicConfiguration(is_client=False)
        fresh.load_cert_chain(first.cert, first.key)
        conf = self._configuration
        # three assignments on the loop thread: a new connection sees the old or the new set
        conf.certificate = fresh.certificate
        conf.certificate_chain = fresh.certificate_chain
        conf.private_key = fresh.private_key
        self._infos = infos
        self._loaded = {
            (first.cert, first.key): (conf.certificate, conf.certificate_chain, conf.private_key)
        }

    def certificate_for(self, server_name: str | None) -> tuple[Any, list[Any], Any] | None:
        """The certificate for a ClientHello's ``server_name``: the TCP listener's choice
        (``ListenerTls.select``: exact name, wildcard, default), loaded for aioquic once per
        reload; ``None`` (the default) when its files cannot be read any more."""
        info = self.tls.select_info(server_name)
        key = (info.cert, info.key)
        got = self._loaded.get(key)
        if got is None:
            from aioquic.quic.configuration import QuicConfiguration

            try:
                conf = QuicConfiguration(is_client=False)
                conf.load_cert_chain(info.cert, info.key)
            except Exception as e:  # a file changed since the reload read it
                log.error("listener %s: QUIC cannot load %s: %s", self.cfg.name, info.cert, e)
                return None
            got = self._loaded[key] = (conf.certificate, conf.certificate_chain, conf.private_key)
        return got

    def _protocol(self, quic: Any, stream_handler: Any = None) -> Any:
        from portway.http.h3 import H3Protocol

        if self.tls.infos is not self._infos:
            try:
                self._load_certificate()
            except Exception as e:  # a file changed since the reload read it: keep the old
                log.error("listener %s: QUIC keeps its old certificate: %s", self.cfg.name, e)
                self._infos = self.tls.infos
        trusted: TrustedProxies = self.trusted_ref()
        proto = H3Protocol(
            quic,
            stream_handler,
            app=self.app,
            limits=self.limits_ref(),
            trusted=trusted,
            listener=self.cfg.name,
            server_port=self.port,
            underscores=self.cfg.underscores_in_headers,
            choose=self.certificate_for,
        )
        self._conns.add(proto)
        return proto

    def begin_drain(self) -> int:
        """GOAWAY to every connection of this endpoint's app; returns how many."""
        from portway.http.h3 import drain_connections

        return drain_connections(self.app)

    async def aclose(self, timeout: float) -> None:
        """After the drain: wait (at most ``timeout`` s) for the connections to close
        themselves once their responses are acknowledged, then close what is left
        (CONNECTION_CLOSE) and the socket."""
        waits = [asyncio.ensure_future(p.wait_closed()) for p in list(self._conns) if not p.closed]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for t in pending:
                t.cancel()
        self.close()

    def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE) and the socket."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()


async def start_quic(
    cfg: ListenerConfig,
    tls: ListenerTls,
    app: App,
    limits_ref: Any,
    trusted_ref: Any,
    tcp: AcceptServer,
) -> QuicEndpoint:
    """Start the QUIC endpoint of ``cfg`` next to its started TCP server ``tcp`` (whose
    bound port is the UDP port unless ``quic_port`` is set)."""
    host, tcp_port = tcp.sockets[0].getsockname()[:2]
    ep = QuicEndpoint(cfg, tls, app, limits_ref, trusted_ref)
    await ep.start(str(host), quic_port(cfg, int(tcp_port)))
    return ep


__all__ = ["ALT_SVC_MAX_AGE", "QuicEndpoint", "alt_svc_value", "quic_port", "start_quic"]
