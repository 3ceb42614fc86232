"""Distinguished names and subject alternative names of client certificates.

Config DNs are RFC 4514 strings (``CN=alice,O=Acme``); certificates arrive as the nested
tuples of :meth:`ssl.SSLSocket.getpeercert`. Both are reduced to one canonical form: a sorted
tuple of ``(SHORT_NAME, value)`` pairs, so attribute order and name spelling
(``commonName`` vs ``CN``) do not matter while values compare exactly.
"""

from __future__ import annotations

from typing import Any

_SHORT = {
    "commonname": "CN",
    "cn": "CN",
    "organizationname": "O",
    "o": "O",
    "organizationalunitname": "OU",
    "ou": "OU",
    "countryname": "C",
    "c": "C",
    "stateorprovincename": "ST",
    "st": "ST",
    "localityname": "L",
    "l": "L",
    "emailaddress": "EMAILADDRESS",
    "domaincomponent": "DC",
    "dc": "DC",
    "serialnumber": "SERIALNUMBER",
    "userid": "UID",
    "uid": "UID",
    "streetaddress": "STREET",
    "street": "STREET",
}

CanonicalDN = tuple[tuple[str, str], ...]


def _attr(name: str) -> str:
    return _SHORT.get(name.strip().lower(), name.strip().upper())


def _split_unescaped(s: str, sep: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if c == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(v: str) -> str:
    out: list[str] = []
    i = 0
    raw = bytearray()

    def flush() -> None:
        if raw:
            out.append(raw.decode("utf-8", "replace"))
            raw.clear()

    while i < len(v):
        c = v[i]
        if c == "\\" and i + 1 < len(v):
            nxt = v[i + 1 : i + 3]
            if len(nxt) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in nxt):
                raw.append(int(nxt, 16))
                i += 3
                continue
            flush()
            out.append(v[i + 1])
            i += 2
            continue
        flush()
        out.append(c)
        i += 1
    flush()
    return "".join(out)


def parse_dn(dn: str) -> CanonicalDN:
    """Canonical form of an RFC 4514 DN string; ``ValueError`` when malformed."""
    pairs: list[tuple[str, str]] = []
    for rdn in _split_unescaped(dn, ","):
        for ava in _split_unescaped(rdn, "+"):
            name, sep, value = ava.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"malformed DN component {ava.strip()!r} (expected NAME=value)")
            pairs.append((_attr(name), _unescape(value.strip())))
    if not pairs:
        raise ValueError("empty DN")
    return tuple(sorted(pairs))


def cert_subject(peercert: dict[str, Any]) -> CanonicalDN | None:
    """Canonical subject DN of a ``getpeercert()`` dict, or ``None`` when absent."""
    subject = peercert.get("subject")
    if not subject:
        return None
    pairs: list[tuple[str, str]] = []
    try:
        for rdn in subject:
            for name, value in rdn:
                pairs.append((_attr(str(name)), str(value)))
    except (TypeError, ValueError):
        return None
    return tuple(sorted(pairs))


def cert_sans(peercert: dict[str, Any]) -> list[str]:
    """Subject alternative name values (DNS, email, URI, IP) of a ``getpeercert()`` dict."""
    out: list[str] = []
    sans: Any = peercert.get("subjectAltName") or ()
    if not isinstance(sans, tuple | list):
        return out
    for item in sans:
        if isinstance(item, tuple) and len(item) == 2:
            kind, value = item
            if kind in ("DNS", "email", "URI", "IP Address"):
                out.append(str(value))
    return out


def dn_key(dn: CanonicalDN) -> str:
    """A directory lookup key for a canonical DN."""
    return "subject:" + "\x1f".join(f"{k}={v}" for k, v in dn)


def san_key(value: str) -> str:
    # DNS names and email domains are case-insensitive; keys are lower-cased on both sides
    return "san:" + value.strip().lower()
