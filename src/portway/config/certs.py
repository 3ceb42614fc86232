"""Reading and checking PEM certificates named by the config (listener and upstream TLS).

:func:`inspect_pair` is the one place that decides whether a certificate is usable: the key
matches the leaf, no certificate of the chain file has expired or is not yet valid, and every
certificate of the file is issued (signature verified) by the one after it — an intermediate
missing *between* the leaf and the last certificate of the file is caught. Whether the last
certificate's own issuer is known to clients is not decidable here (a private CA is as
legitimate as a public one), so a file holding only the leaf is accepted.

The loader calls it at validation (errors carry the YAML path and line, ``portway validate``
included); the listener calls it again when it builds its contexts, for the names and expiry.
"""

from __future__ import annotations

import datetime as _dt
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

#: a certificate this close to its end is reported (log warning; the metric always shows it)
EXPIRY_WARNING_SECONDS = 14 * 24 * 3600


class CertificateError(ValueError):
    """A certificate (or key, or CA bundle) that cannot be served; the message says why."""


@dataclass(frozen=True)
class CertInfo:
    """What the listener needs of a checked certificate."""

    cert: str
    key: str
    #: DNS names from the SANs (lowercase; ``*.example.com`` kept as is); the subject CN only
    #: when the certificate has no DNS SAN at all
    names: tuple[str, ...]
    not_after: float  # epoch seconds
    label: str  # first name, for logs and the metric's ``name`` label


def _read_chain(path: str) -> list[x509.Certificate]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CertificateError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"{path} holds no PEM certificate") from None
    if not chain:
        raise CertificateError(f"{path} holds no PEM certificate")
    return chain


def _names(leaf: x509.Certificate) -> tuple[str, ...]:
    out: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        out = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        pass
    if not out:
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        out = [str(c.value).lower() for c in cns]
    return tuple(out)


def _check_dates(path: str, chain: list[x509.Certificate], now: _dt.datetime) -> None:
    for i, c in enumerate(chain):
        what = "the certificate" if i == 0 else f"chain certificate #{i + 1}"
        if c.not_valid_after_utc <= now:
            raise CertificateError(
                f"{what} in {path} expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
        if c.not_valid_before_utc > now:
            raise CertificateError(
                f"{what} in {path} is not valid before {c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
            )


def _check_links(path: str, chain: list[x509.Certificate]) -> None:
    for i in range(len(chain) - 1):
        child, parent = chain[i], chain[i + 1]
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, Exception) as e:  # InvalidSignature is not a ValueError
            raise CertificateError(
                f"incomplete chain in {path}: certificate #{i + 1} "
                f"({child.subject.rfc4514_string()}) is not issued by certificate #{i + 2} "
                f"({parent.subject.rfc4514_string()}): {type(e).__name__}"
            ) from None


def inspect_pair(cert: str, key: str, now: _dt.datetime | None = None) -> CertInfo:
    """Check ``cert`` (PEM chain, leaf first) and ``key``; raise :class:`CertificateError`."""
    now = now or _dt.datetime.now(_dt.UTC)
    chain = _read_chain(cert)
    _check_dates(cert, chain, now)
    _check_links(cert, chain)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError:
        raise CertificateError(f"cannot read {key}: no such file") from None
    except ssl.SSLError as e:
        reason = "the key does not match the certificate"
        if "KEY_VALUES_MISMATCH" not in str(e):
            reason = f"cannot load the key: {e.reason or e}"
        raise CertificateError(f"{key}: {reason}") from None
    except OSError as e:
        raise CertificateError(f"cannot read {key}: {e.strerror or e}") from None
    names = _names(chain[0])
    return CertInfo(
        cert=cert,
        key=key,
        names=names,
        not_after=chain[0].not_valid_after_utc.timestamp(),
        label=names[0] if names else chain[0].subject.rfc4514_string(),
    )


def check_ca_bundle(path: str) -> None:
    """A CA bundle must hold at least one certificate that OpenSSL loads."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise CertificateError(f"cannot read {path}: no such file") from None
    except (ssl.SSLError, OSError) as e:
        raise CertificateError(f"{path} is not a PEM CA bundle: {e}") from None
