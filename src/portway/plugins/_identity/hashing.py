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
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from argon2 import PasswordHasher

PasswordScheme = Literal["argon2", "bcrypt"]

_PROCESS_KEY = secrets.token_bytes(32)


# argon2 (with cffi) and bcrypt cost ~0.85 MB of RSS in every worker: they are imported when
# a password hash is first checked or made, not with the consumer directory (key_auth, jwt
# and mTLS consumers never need them)
@functools.cache
def _argon2() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


def sha256_hex(secret: str | bytes) -> str:
    data = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()


def credential_id(kind: str, material: str | bytes) -> str:
    """A stable, non-reversible identifier for a credential, e.g. ``key_auth:3f2a…``.

    It is derived from a hash of ``material``, so logs and upstream headers can name the
    credential without exposing it. ``material`` must never be a secret (or a digest of one):
    the hash is unkeyed, so a secret could be guessed offline from the identifier (API keys
    are named by their owner and position instead, see ``runtime/consumers.py``).
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
        from argon2.exceptions import InvalidHashError

        try:
            _argon2().check_needs_rehash(password_hash)
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
        from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

        try:
            return _argon2().verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    import bcrypt

    try:
        return bcrypt.checkpw(password.encode("utf-8"), password_hash.encode("ascii"))
    except ValueError:
        # bcrypt ≥ 5 refuses passwords over 72 bytes instead of truncating them
        return False


def hash_password(password: str, scheme: PasswordScheme = "argon2") -> str:
    """Produce a stored hash (for tooling and tests; the gateway itself only verifies)."""
    if scheme == "argon2":
        return _argon2().hash(password)
    import bcrypt

    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode("ascii")


def hash_params(password_hash: str) -> str:
    """What a hash's verification cost depends on: its scheme and parameters, e.g.
    ``bcrypt$2b$12`` or ``argon2id$v=19$m=65536,t=3,p=4`` (the salt and digest left out)."""
    if password_hash.startswith("$argon2"):
        parts = password_hash.split("$")  # "", variant, version, params, salt, digest
        if len(parts) == 6:
            return f"{parts[1]}${parts[2]}${parts[3]}"
        return "argon2"
    parts = password_hash.split("$")  # "", prefix, cost, salt+digest
    if len(parts) == 4:
        return f"bcrypt${parts[1]}${parts[2]}"
    return "bcrypt"


@functools.cache
def dummy_hash(params: str = "") -> str:
    """A throwaway hash verified when the user is unknown, so response time does not reveal
    which usernames exist. ``params`` (from :func:`hash_params`) gives its scheme and cost, to
    cost what verifying a real user's hash costs; "" is argon2 with the library defaults.
    Computed once per ``params`` (hashing costs up to ~0.1 s)."""
    secret = secrets.token_hex(16)
    if params.startswith("bcrypt$"):
        import bcrypt

        _, prefix, cost = params.split("$")
        salt = bcrypt.gensalt(rounds=int(cost), prefix=prefix.encode("ascii"))
        return bcrypt.hashpw(secret.encode("ascii"), salt).decode("ascii")
    if params.startswith("argon2"):
        from argon2 import PasswordHasher, Type

        variant, _, costs = params.split("$")
        kv = dict(x.split("=", 1) for x in costs.split(","))
        hasher = PasswordHasher(
            time_cost=int(kv["t"]),
            memory_cost=int(kv["m"]),
            parallelism=int(kv["p"]),
            type={"argon2id": Type.ID, "argon2i": Type.I, "argon2d": Type.D}[variant],
        )
        return hasher.hash(secret)
    return _argon2().hash(secret)


def dummy_params(hashes: Iterable[str]) -> str:
    """The parameters the dummy hash should have for a set of configured hashes: the most
    common ones (ties broken by sorted order, so every worker picks the same); "" for none."""
    counts = Counter(hash_params(h) for h in hashes)
    if not counts:
        return ""
    top = max(counts.values())
    return sorted(p for p, n in counts.items() if n == top)[0]
