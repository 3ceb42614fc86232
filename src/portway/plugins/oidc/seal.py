"""Authenticated encryption of cookie values (AES-256-GCM from ``cryptography``).

A sealed value is ``base64url(version || key id || nonce || ciphertext+tag)``. Keys are derived
with HKDF-SHA256 from each configured secret, so the secret itself never touches AES and one
secret yields independent keys for independent purposes. The cookie's *purpose* (session,
login state) is the associated data: a value sealed for one purpose never opens as another.
Rotation: new values use the first secret; any configured secret opens a value (its key id,
the first bytes of a hash of the derived key, picks the key without trial decryption).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE = 12
_KID = 4


def _derive(secret: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"portway-oidc", info=b"cookie-seal v1"
    ).derive(secret.encode("utf-8"))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Seals and opens small values; ``open`` returns ``None`` for anything not sealed by us."""

    def __init__(self, secrets: list[str]) -> None:
        if not secrets:
            raise ValueError("at least one secret is required")
        self._keys: list[tuple[bytes, AESGCM]] = []
        for s in secrets:
            key = _derive(s)
            self._keys.append((hashlib.sha256(key).digest()[:_KID], AESGCM(key)))

    def seal(self, data: bytes, purpose: str) -> str:
        kid, aead = self._keys[0]
        nonce = os.urandom(_NONCE)
        sealed = aead.encrypt(nonce, data, purpose.encode("utf-8"))
        return b64url(_VERSION + kid + nonce + sealed)

    def open(self, value: str, purpose: str) -> bytes | None:
        try:
            raw = b64url_decode(value)
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 1 + _KID + _NONCE + 16 or raw[:1] != _VERSION:
            return None
        kid = raw[1 : 1 + _KID]
        nonce = raw[1 + _KID : 1 + _KID + _NONCE]
        for k, aead in self._keys:
            if k == kid:
                try:
                    return aead.decrypt(nonce, raw[1 + _KID + _NONCE :], purpose.encode("utf-8"))
                except InvalidTag:
                    return None
        return None
