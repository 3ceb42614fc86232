"""Credential hashing: API-key digests, password verification and cache keys.

Secrets never leave this module in clear form: API keys are kept as SHA-256 digests (looked up
by digest, then compared with :func:`hmac.compare_digest`), passwords as argon2id/bcrypt hashes,
and cache keys are keyed BLAKE2b digests under a per-process random key so a memory dump of the
cache reveals nothing reusable.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from typing import Literal

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PasswordScheme = Literal["argon2", "bcrypt"]

_PROCESS_KEY = secrets.token_bytes(32)
_ARGON2 = PasswordHasher()


def sha256_hex(secret: str | bytes) -> str:
    data = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()


def credential_id(kind: str, material: str | bytes) -> str:
    """A stable, non-reversible identifier for a credential, e.g. ``key_auth:3f2a…``.

    It is derived from a hash of the credential material, so logs and upstream headers can
    name the credential without exposing it.
    """
    data = material.encode("utf-8") if isinstance(material, str) else material
    return f"{kind}:{hashlib.sha256(b'portway-credential:' + data).hexdigest()[:16]}"


def keyed_digest(*parts: str | bytes) -> bytes:
    """Fast keyed hash (BLAKE2b, per-process key) of ``parts``, for in-memory cache keys."""
    h = hashlib.blake2b(key=_PROCESS_KEY, digest_size=32)
    for p in parts:
        b = p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p
        # length-prefix each part so ("ab", "c") and ("a", "bc") never collide
        h.update(len(b).to_bytes(4, "big"))
        h.update(b)
    return h.digest()


def digests_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


def password_scheme(password_hash: str) -> PasswordScheme:
    """The scheme of a stored hash; ``ValueError`` for anything but argon2 or bcrypt."""
    if password_hash.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        try:
            _ARGON2.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError) as e:
            raise ValueError("password_hash is not a valid argon2 hash") from e
        return "argon2"
    if password_hash.startswith(("$2a$", "$2b$", "$2y$")):
        parts = password_hash.split("$")
        if len(parts) != 4 or not parts[2].isdigit() or len(parts[3]) != 53:
            raise ValueError("password_hash is not a valid bcrypt hash")
        return "bcrypt"
    raise ValueError("password_hash must be an argon2 ($argon2id$…) or bcrypt ($2b$…) hash")


def verify_password(password_hash: str, password: str) -> bool:
    """Check ``password`` against a stored argon2/bcrypt hash. CPU-bound: call it in a thread."""
    if password_hash.startswith("$argon2"):
        try:
            return _ARGON2.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    try:
        return bcrypt.checkpw(password.encode("utf-8"), password_hash.encode("ascii"))
    except ValueError:
        # bcrypt ≥ 5 refuses passwords over 72 bytes instead of truncating them
        return False


def hash_password(password: str, scheme: PasswordScheme = "argon2") -> str:
    """Produce a stored hash (for tooling and tests; the gateway itself only verifies)."""
    if scheme == "argon2":
        return _ARGON2.hash(password)
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode("ascii")


@functools.cache
def dummy_hash() -> str:
    """A throwaway argon2 hash verified when the user is unknown, so response time does not
    reveal which usernames exist (computed on first use: hashing costs ~0.1 s)."""
    return _ARGON2.hash(secrets.token_hex(16))
