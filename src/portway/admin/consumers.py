"""Consumer and credential edits for the admin API, as pure functions over config data.

Edits are made on the *source* document (``yaml.safe_load`` of the config text, so ``${ENV}``
references stay unresolved) and applied through the same validate → build → swap path as
``PUT /config``. Credential secrets sent in clear are stored hashed: ``key_auth.key`` becomes
``key_sha256`` and ``basic_auth.password`` becomes an argon2 ``password_hash``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import Any

from portway.admin.redact import credential_fingerprint, redact_credential
from portway.config.schema import ConsumerConfig
from portway.errors import GatewayError

KINDS: tuple[str, ...] = ("key_auth", "basic_auth", "jwt", "mtls")


class UnprocessableError(GatewayError):
    status = 422
    code = "invalid_request"


class ConflictError(GatewayError):
    status = 409
    code = "conflict"


class InvalidConsumer(ValueError):
    """A consumer body that does not validate; ``issues`` are ``{path, message}`` dicts."""

    def __init__(self, issues: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(i["message"]) for i in issues))
        self.issues = issues


async def consumer_body(data: Any, username: str | None) -> tuple[dict[str, Any], CredentialSpec]:
    """Validate a ``POST /consumers`` (``username`` None) or ``PUT /consumers/{username}``
    body: the entry to store (without credentials) and what to do with its credentials."""
    from pydantic import ValidationError

    from portway.admin.models import ConsumerInput, ConsumerUpdate

    model = ConsumerInput if username is None else ConsumerUpdate
    try:
        body = model.model_validate(data)
    except ValidationError as e:
        raise InvalidConsumer(
            [
                {"path": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                for err in e.errors()
            ]
        ) from None
    name = body.username if username is None else username
    if body.username is not None and body.username != name:
        raise InvalidConsumer(
            [{"path": "username", "message": f"must be {name!r}, the consumer in the URL"}]
        )
    out: dict[str, Any] = {"username": name}
    if body.id is not None:
        out["id"] = body.id
    if body.groups:
        out["groups"] = list(body.groups)
    return out, await credential_spec(body.credentials)


def credential_views(c: ConsumerConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind in KINDS:
        for cred in getattr(c.credentials, kind):
            out.append(
                {"id": credential_fingerprint(kind, cred), "kind": kind, **redact_credential(cred)}
            )
    return out


def consumer_view(c: ConsumerConfig) -> dict[str, Any]:
    """A consumer as the API shows it: secrets redacted, credentials flattened with ids."""
    return {
        "username": c.username,
        "id": c.id,
        "groups": list(c.groups),
        "credentials": credential_views(c),
    }


def find_credential(c: ConsumerConfig, kind: str, cred_id: str) -> int | None:
    """Index within ``c.credentials.<kind>`` of the credential with id ``cred_id``."""
    for i, cred in enumerate(getattr(c.credentials, kind)):
        if credential_fingerprint(kind, cred) == cred_id:
            return i
    return None


def _sha256_hex(key: str) -> str:
    try:
        from portway.plugins._identity.hashing import sha256_hex
    except ImportError:  # the identity package is optional for the admin API
        return hashlib.sha256(key.encode("utf-8")).hexdigest()
    return sha256_hex(key)


async def _hash_password(password: str) -> str:
    try:
        from portway.plugins._identity.hashing import hash_password
    except ImportError as e:
        raise UnprocessableError("password hashing is not available; send password_hash") from e
    # argon2 takes tens of milliseconds of CPU: keep the event loop serving meanwhile
    return await asyncio.to_thread(hash_password, password)


async def prepare_credential(kind: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The credential to store for ``body`` and, for a generated API key, the key in clear."""
    cred = dict(body)
    generated: str | None = None
    if kind == "key_auth":
        if "key" not in cred and "key_sha256" not in cred:
            generated = secrets.token_urlsafe(32)
            cred["key"] = generated
        key = cred.pop("key", None)
        if key is not None:
            if not isinstance(key, str) or not key:
                raise UnprocessableError("key_auth.key must be a non-empty string")
            if "key_sha256" in cred:
                raise UnprocessableError("give exactly one of key or key_sha256")
            cred["key_sha256"] = _sha256_hex(key)
    elif kind == "basic_auth" and "password" in cred:
        pw = cred.pop("password")
        if not isinstance(pw, str) or not pw:
            raise UnprocessableError("basic_auth.password must be a non-empty string")
        if "password_hash" in cred:
            raise UnprocessableError("give exactly one of password or password_hash")
        cred["password_hash"] = await _hash_password(pw)
    return cred, generated


async def prepare_credentials(creds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, items in creds.items():
        if kind not in KINDS:
            raise UnprocessableError(
                f"unknown credential kind {kind!r}; use one of {', '.join(KINDS)}"
            )
        out[kind] = [(await prepare_credential(kind, c))[0] for c in items]
    return out


#: what a consumer write does with credentials: ``("keep", None)`` (none sent),
#: ``("replace", {kind: [cred]})`` (a mapping) or ``("list", [(kind, id | None, cred | None)])``
#: (the list form ``GET`` shows: an id keeps that credential, an item without one is new)
CredentialSpec = tuple[str, Any]


async def credential_spec(creds: Any) -> CredentialSpec:
    """Prepare (hash) the credentials of a consumer body; see :data:`CredentialSpec`."""
    if creds is None:
        return ("keep", None)
    if isinstance(creds, list):
        items: list[tuple[str, str | None, dict[str, Any] | None]] = []
        for item in creds:
            fields = {k: v for k, v in item.model_dump().items() if k not in ("id", "kind")}
            if item.id is not None:
                items.append((item.kind, item.id, None))
            else:
                items.append((item.kind, None, (await prepare_credential(item.kind, fields))[0]))
        return ("list", items)
    mapping = {k: v for k, v in creds.model_dump().items() if v}
    return ("replace", await prepare_credentials(mapping) if mapping else {})


def with_credentials(
    entry: dict[str, Any],
    spec: CredentialSpec,
    current: ConsumerConfig | None,
    source: Any,
) -> dict[str, Any]:
    """``entry`` with its credentials: kept from the consumer's ``source`` entry, replaced,
    or resolved from the list form against ``current`` (the served consumer; its ids are
    fingerprints of the effective credentials, and the source entry at the same index is
    kept as written, ``${ENV}`` references included)."""
    out = dict(entry)
    src_creds = source.get("credentials") if isinstance(source, dict) else None
    kind_, data = spec
    if kind_ == "keep":
        if src_creds:
            out["credentials"] = src_creds
        return out
    if kind_ == "replace":
        if data:
            out["credentials"] = data
        return out
    creds: dict[str, list[Any]] = {}
    for kind, cred_id, cred in data:
        if cred_id is None:
            creds.setdefault(kind, []).append(cred)
            continue
        idx = find_credential(current, kind, cred_id) if current is not None else None
        listed = src_creds.get(kind) if isinstance(src_creds, dict) else None
        if idx is None or not isinstance(listed, list) or idx >= len(listed):
            raise UnprocessableError(
                f"consumer {entry['username']!r} has no {kind} credential {cred_id!r}; "
                "send new credentials without an id"
            )
        creds.setdefault(kind, []).append(listed[idx])
    if creds:
        out["credentials"] = creds
    return out


def source_consumers(doc: dict[str, Any]) -> list[Any]:
    """The ``consumers`` list of a source document (created when absent)."""
    cons = doc.get("consumers")
    if cons is None:
        cons = doc["consumers"] = []
    if not isinstance(cons, list):
        raise ConflictError("the config's consumers section is not a list")
    return cons


def source_index(doc: dict[str, Any], username: str) -> int | None:
    for i, c in enumerate(source_consumers(doc)):
        if isinstance(c, dict) and c.get("username") == username:
            return i
    return None


def reload_warnings(unsaved: set[str], before: set[str], after: set[str]) -> list[str]:
    """What a reload from the file undid of the consumers changed through the API without
    ``write_back`` (the file never had those changes)."""
    out = []
    for name in sorted(unsaved):
        if name in before and name not in after:
            out.append(
                f"consumer {name!r} was created through the admin API without write_back and "
                "is not in the config file: it has been dropped"
            )
        elif name in after:
            out.append(
                f"changes to consumer {name!r} made through the admin API without write_back "
                "are not in the config file: the file's version is now served"
            )
    return out
