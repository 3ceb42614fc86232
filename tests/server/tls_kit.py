"""A test PKI written with ``cryptography``: a CA, leaf certificates with SANs, client certs.

pki = Pki(tmp_path)
cert, key = pki.leaf("a.example.com")                  # signed by the test CA
cert, key = pki.leaf("*.api.example.com")
cert, key = pki.leaf("old.example.com", days=(-30, -1))  # expired
pki.ca_path                                             # PEM of the CA, for clients
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Pki:
    """A CA under ``root``; every file it writes lands there."""

    def __init__(self, root: Path, name: str = "Portway Test CA") -> None:
        self.root = root
        self.ca_key = _key()
        now = dt.datetime.now(dt.UTC)
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        slug = name.lower().replace(" ", "-")
        self.ca_path = str(root / f"{slug}.pem")
        Path(self.ca_path).write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))

    def leaf(
        self,
        *names: str,
        days: tuple[int, int] = (-1, 90),
        client: bool = False,
        file: str | None = None,
        issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ) -> tuple[str, str]:
        """Write a leaf for ``names`` (DNS or IP SANs) valid from/to ``days`` relative to now;
        return (cert path, key path)."""
        ca, ca_key = issuer or (self.ca, self.ca_key)
        key = _key()
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=days[0]))
            .not_valid_after(now + dt.timedelta(days=days[1]))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        stem = file or names[0].replace("*", "wild")
        cpath, kpath = self.root / f"{stem}.pem", self.root / f"{stem}-key.pem"
        cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kpath.write_bytes(_pem_key(key))
        return str(cpath), str(kpath)

    def client_context(self, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
        """A client context trusting this CA (optionally presenting ``cert``)."""
        ctx = ssl.create_default_context(cafile=self.ca_path)
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        return ctx


async def handshake(
    port: int,
    server_name: str | None,
    ctx: ssl.SSLContext,
    alpn: list[str] | None = None,
) -> tuple[list[str], str | None]:
    """Handshake with 127.0.0.1:``port`` sending ``server_name`` as SNI; return the DNS SANs
    of the certificate served and the ALPN protocol selected."""
    import asyncio

    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    _, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_name)
    try:
        obj = w.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return list(san.get_values_for_type(x509.DNSName)), obj.selected_alpn_protocol()
    finally:
        w.close()
