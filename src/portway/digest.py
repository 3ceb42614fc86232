"""Hashes and constant-time comparison without loading OpenSSL's digests (``_hashlib``).

``import hashlib`` (and ``hmac``, ``secrets``, which import it) initialises OpenSSL's digest
tables: ~0.5 MB of RSS in every worker and ~20 ms of start-up, for what Portway's core uses of
them — blake2b of a balancing or split key, the sha256 fingerprint of a config, comparing a
debug token — which CPython's own built-in modules compute just the same (``hashlib.blake2b``
*is* ``_blake2.blake2b``; ``hmac.compare_digest`` falls back to
``_operator._compare_digest``). Each name falls back to the ``hashlib``/``hmac`` one when the
built-in module is missing (another interpreter, a build without it): same results either way.
Plugins that need many digests (JWT, password hashes) keep using ``hashlib`` directly.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = ["blake2b", "compare_digest", "sha256", "token_hex"]

if TYPE_CHECKING:
    from hashlib import blake2b, sha256
    from hmac import compare_digest
else:
    try:
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - CPython always has it
        from hashlib import blake2b
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:  # pragma: no cover
            from hashlib import sha256
    try:
        from _operator import _compare_digest as compare_digest
    except ImportError:  # pragma: no cover
        from hmac import compare_digest


def token_hex(nbytes: int) -> str:
    """``secrets.token_hex``: ``nbytes`` random bytes from the OS, as hex."""
    return os.urandom(nbytes).hex()
