"""Build the :class:`~portway.pipeline.plugin.ConsumerDirectory` from ``consumers:``.

The runtime calls :func:`build_consumer_directory` once per config. Credentials are validated
here (errors name the exact item, e.g. ``consumers[0].credentials.jwt[1]: …``) and stored in
the form auth plugins look them up by:

==========  =====================================  ============================
kind        directory key                          value
==========  =====================================  ============================
key_auth    SHA-256 hex of the key                 :class:`KeyEntry`
basic_auth  login name                             :class:`BasicEntry`
jwt         ``iss`` claim value                    :class:`JwtEntry`
mtls        ``subject:<canonical DN>``/``san:<v>``  :class:`MtlsEntry`
==========  =====================================  ============================
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from portway.config.schema import ConsumerConfig
from portway.pipeline.context import Consumer
from portway.pipeline.plugin import ConsumerDirectory
from portway.plugins._identity.credentials import (
    BasicAuthCredential,
    BasicEntry,
    JwtCredential,
    JwtEntry,
    KeyAuthCredential,
    KeyEntry,
    MtlsCredential,
    MtlsEntry,
)
from portway.plugins._identity.dn import dn_key, parse_dn, san_key
from portway.plugins._identity.hashing import credential_id, sha256_hex

#: namespace of ids generated from usernames, so an unchanged username keeps its id
M = TypeVar("M", bound=BaseModel)

CONSUMER_NAMESPACE = uuid.UUID("5b0d7c52-6f0e-4a57-9a43-7f4f6a1e2d11")


def consumer_id(username: str) -> str:
    return str(uuid.uuid5(CONSUMER_NAMESPACE, username))


def _validate(model: type[M], data: Any, where: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errs = "; ".join(
            (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ")
            for err in e.errors()
        )
        raise ValueError(f"{where}: {errs}") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def build_consumer_directory(consumers: Sequence[ConsumerConfig]) -> ConsumerDirectory:
    """Validate every consumer's credentials and index them; ``ValueError`` on the first bad
    item or on a credential claimed by two consumers."""
    by_name: dict[str, Consumer] = {}
    by_id: dict[str, str] = {}
    creds: dict[tuple[str, str], tuple[Consumer, Any]] = {}
    basic: dict[str, tuple[Consumer, list[str], str]] = {}
    jwt: dict[str, tuple[Consumer, list[Any], str]] = {}

    def claim(kind: str, key: str, consumer: Consumer, value: Any, where: str) -> None:
        prev = creds.get((kind, key))
        if prev is not None and prev[0].username != consumer.username:
            raise ValueError(
                f"{where}: credential already belongs to consumer {prev[0].username!r}"
            )
        creds[(kind, key)] = (consumer, value)

    for i, cc in enumerate(consumers):
        base = f"consumers[{i}]"
        if cc.username in by_name:
            raise ValueError(f"{base}: duplicate consumer {cc.username!r}")
        cid = cc.id or consumer_id(cc.username)
        if cid in by_id:
            raise ValueError(f"{base}: id {cid!r} already used by {by_id[cid]!r}")
        consumer = Consumer(id=cid, username=cc.username, groups=frozenset(cc.groups))
        by_name[cc.username] = consumer
        by_id[cid] = cc.username
        c = cc.credentials

        for j, raw in enumerate(c.key_auth):
            where = f"{base}.credentials.key_auth[{j}]"
            k = _validate(KeyAuthCredential, raw, where)
            digest = (k.key_sha256 or sha256_hex(k.key or "")).lower()
            # the identifier names the consumer's j-th key, not the key: one derived from the
            # key's digest would let whoever sees X-Credential-Identifier (upstreams, logs)
            # test guessed keys offline. It is the same in every worker and every instance
            # built from the same config (rate-limit keys in a shared store rely on that).
            entry = KeyEntry(digest, credential_id("key_auth", f"{cid}:{j}"))
            if ("key_auth", digest) in creds:
                raise ValueError(f"{where}: duplicate API key")
            claim("key_auth", digest, consumer, entry, where)

        for j, raw in enumerate(c.basic_auth):
            where = f"{base}.credentials.basic_auth[{j}]"
            b = _validate(BasicAuthCredential, raw, where)
            login = b.username or cc.username
            prev_b = basic.get(login)
            if prev_b is not None and prev_b[0].username != cc.username:
                raise ValueError(
                    f"{where}: login {login!r} already belongs to consumer {prev_b[0].username!r}"
                )
            if prev_b is None:
                basic[login] = (consumer, [b.password_hash], where)
            else:
                prev_b[1].append(b.password_hash)

        for j, raw in enumerate(c.jwt):
            where = f"{base}.credentials.jwt[{j}]"
            jc = _validate(JwtCredential, raw, where)
            prev_j = jwt.get(jc.issuer)
            if prev_j is not None and prev_j[0].username != cc.username:
                raise ValueError(
                    f"{where}: issuer {jc.issuer!r} already belongs to consumer "
                    f"{prev_j[0].username!r}"
                )
            if prev_j is None:
                jwt[jc.issuer] = (consumer, [jc.to_key()], where)
            else:
                prev_j[1].append(jc.to_key())

        for j, raw in enumerate(c.mtls):
            where = f"{base}.credentials.mtls[{j}]"
            m = _validate(MtlsCredential, raw, where)
            key = dn_key(parse_dn(m.subject)) if m.subject is not None else san_key(m.san or "")
            prev_m = creds.get(("mtls", key))
            if prev_m is not None:
                raise ValueError(
                    f"{where}: certificate identity already belongs to consumer "
                    f"{prev_m[0].username!r}"
                )
            claim("mtls", key, consumer, MtlsEntry(credential_id("mtls", key)), where)

    for login, (consumer, hashes, where) in basic.items():
        if login in by_name and login != consumer.username:
            # a login equal to another consumer's name would read as that consumer in logs
            raise ValueError(f"{where}: login {login!r} is another consumer's username")
        entry_b = BasicEntry(tuple(hashes), credential_id("basic_auth", login))
        claim("basic_auth", login, consumer, entry_b, where)
    for iss, (consumer, keys, where) in jwt.items():
        claim("jwt", iss, consumer, JwtEntry(tuple(keys), credential_id("jwt", iss)), where)
    return ConsumerDirectory(by_name, creds)
