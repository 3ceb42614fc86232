"""Keeping secrets out of admin API responses, and putting them back on round trips.

``GET /config`` and the consumer endpoints replace secret values with :data:`REDACTED`
(credential material, tokens, passwords, passwords inside URLs). A document sent back with
``PUT /config`` may keep those placeholders: :func:`restore_redacted` puts the current values
back wherever the placeholder still stands at the same place, so a GET → edit → PUT cycle
never needs the secrets in clear.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

REDACTED = "<redacted>"

#: credential fields that hold a secret or something an attacker could brute-force offline
CREDENTIAL_SECRETS: frozenset[str] = frozenset(
    {"key", "key_sha256", "secret", "password", "password_hash", "token", "private_key"}
)
_SECRET_NAME = re.compile(
    r"(^|_)(password|passwd|secret|token|private_key|api_key|client_secret|credentials?)(_|$)",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*:)([^/@]+)(@)")


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def _redact_str(value: str) -> str:
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), value)


def redact_credential(cred: dict[str, Any]) -> dict[str, Any]:
    """A copy of one credential with every secret field replaced."""
    return {
        k: (REDACTED if k in CREDENTIAL_SECRETS and v is not None else v) for k, v in cred.items()
    }


def credential_fingerprint(kind: str, cred: dict[str, Any]) -> str:
    """Stable id of a credential (64-bit prefix of a SHA-256 over its canonical JSON); the
    credential models have no id field, and this one survives restarts and workers."""
    data = orjson.dumps(cred, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(b"portway-admin-credential:" + kind.encode() + b":" + data).hexdigest()[
        :16
    ]


def redact_config(data: Any, *, _in_credentials: bool = False) -> Any:
    """A deep copy of JSON-like ``data`` (a dumped config) without secrets."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            key = str(k)
            if key == "credentials" and isinstance(v, dict):
                out[key] = {
                    kind: [redact_credential(c) if isinstance(c, dict) else c for c in items]
                    if isinstance(items, list)
                    else items
                    for kind, items in v.items()
                }
            elif is_secret_name(key) and isinstance(v, str):
                out[key] = REDACTED
            else:
                out[key] = redact_config(v)
        return out
    if isinstance(data, list):
        return [redact_config(v) for v in data]
    if isinstance(data, str):
        return _redact_str(data)
    return data


def contains_redacted(data: Any) -> bool:
    if isinstance(data, str):
        return REDACTED in data
    if isinstance(data, dict):
        return any(contains_redacted(v) for v in data.values())
    if isinstance(data, list):
        return any(contains_redacted(v) for v in data)
    return False


def _pair_key(item: Any) -> Any:
    if isinstance(item, dict):
        for k in ("username", "name"):
            v = item.get(k)
            if isinstance(v, str):
                return (k, v)
    return None


def restore_redacted(new: Any, old: Any) -> Any:
    """``new`` with each :data:`REDACTED` placeholder replaced by the value at the same place
    in ``old`` (list items of consumers/routes are paired by ``username``/``name``, others by
    position). Placeholders with no counterpart are left for validation to reject."""
    if isinstance(new, str):
        if REDACTED not in new or not isinstance(old, str):
            return new
        if new == REDACTED or _redact_str(old) == new:
            return old
        return new
    if isinstance(new, dict):
        if not isinstance(old, dict):
            return new
        return {k: restore_redacted(v, old.get(k)) for k, v in new.items()}
    if isinstance(new, list):
        if not isinstance(old, list):
            return new
        by_key = {k: o for o in old if (k := _pair_key(o)) is not None}
        out = []
        for i, item in enumerate(new):
            key = _pair_key(item)
            if key is None:
                key = ("#", i)
                by_key.setdefault(key, old[i] if i < len(old) else None)
            counterpart = by_key.get(key)
            out.append(restore_redacted(item, counterpart))
        return out
    return new
