"""portway.digest computes what hashlib, hmac and secrets compute (it only avoids loading
OpenSSL's digest tables in a worker)."""

from __future__ import annotations

import hashlib
import hmac

from portway import digest


def test_the_digests_are_hashlibs() -> None:
    for data in (b"", b"key", b"x" * 10_000):
        assert digest.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
        assert (
            digest.blake2b(data, digest_size=8).digest()
            == hashlib.blake2b(data, digest_size=8).digest()
        )


def test_compare_digest_is_hmacs() -> None:
    for a, b in ((b"tok", b"tok"), (b"tok", b"tak"), (b"tok", b"to"), (b"", b"")):
        assert digest.compare_digest(a, b) == hmac.compare_digest(a, b)


def test_token_hex() -> None:
    t = digest.token_hex(8)
    assert len(t) == 16 and int(t, 16) >= 0
    assert digest.token_hex(8) != t
