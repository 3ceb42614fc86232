"""build_consumer_directory: validation, ids, hashed storage, duplicate detection."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from argon2 import PasswordHasher

from portway.config.schema import ConsumerConfig
from portway.plugins._identity.credentials import BasicEntry, JwtEntry, KeyEntry, MtlsEntry
from portway.runtime.consumers import CONSUMER_NAMESPACE, build_consumer_directory

ARGON = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("pw")


def build(*consumers: dict) -> object:
    return build_consumer_directory([ConsumerConfig.model_validate(c) for c in consumers])


def test_ids_generated_from_username_are_stable_uuid5() -> None:
    d = build({"username": "alice"}, {"username": "bob", "id": "fixed-id", "groups": ["a", "b"]})
    alice = d.get("alice")
    bob = d.get("bob")
    assert alice is not None and bob is not None
    assert alice.id == str(uuid.uuid5(CONSUMER_NAMESPACE, "alice"))
    assert build({"username": "alice"}).get("alice").id == alice.id
    assert bob.id == "fixed-id" and bob.groups == frozenset({"a", "b"})


def test_key_stored_as_digest_only() -> None:
    d = build({"username": "a", "credentials": {"key_auth": [{"key": "clear-key"}]}})
    digest = hashlib.sha256(b"clear-key").hexdigest()
    hit = d.by_credential("key_auth", digest)
    assert hit is not None
    consumer, entry = hit
    assert consumer.username == "a"
    assert isinstance(entry, KeyEntry) and entry.digest == digest
    assert "clear-key" not in repr(entry) and entry.credential.startswith("key_auth:")
    assert d.by_credential("key_auth", "clear-key") is None


def test_key_sha256_form_and_case() -> None:
    digest = hashlib.sha256(b"k").hexdigest().upper()
    d = build({"username": "a", "credentials": {"key_auth": [{"key_sha256": digest}]}})
    assert d.by_credential("key_auth", digest.lower()) is not None


def test_all_kinds_indexed() -> None:
    d = build(
        {
            "username": "alice",
            "credentials": {
                "basic_auth": [
                    {"password_hash": ARGON},
                    {"password_hash": ARGON, "username": "al"},
                ],
                "jwt": [{"issuer": "alice-app", "secret": "x" * 32}],
                "mtls": [{"subject": "CN=alice,O=Acme"}, {"san": "Alice@Example.com"}],
            },
        }
    )
    assert isinstance(d.by_credential("basic_auth", "alice")[1], BasicEntry)
    assert isinstance(d.by_credential("basic_auth", "al")[1], BasicEntry)
    j = d.by_credential("jwt", "alice-app")[1]
    assert isinstance(j, JwtEntry) and j.keys[0].algorithms == {"HS256"}
    assert isinstance(d.by_credential("mtls", "subject:CN=alice\x1fO=Acme")[1], MtlsEntry)
    assert d.by_credential("mtls", "san:alice@example.com") is not None


@pytest.mark.parametrize(
    ("creds", "needle"),
    [
        ({"key_auth": [{"key": "a"}, {}]}, "consumers[0].credentials.key_auth[1]"),
        ({"key_auth": [{"key": "a", "key_sha256": "0" * 64}]}, "exactly one"),
        ({"key_auth": [{"key_sha256": "zz"}]}, "64 hex"),
        ({"basic_auth": [{"password_hash": "plain"}]}, "argon2"),
        ({"basic_auth": [{"password_hash": "$2b$12$short"}]}, "bcrypt"),
        ({"jwt": [{"issuer": "i", "secret": "short"}]}, "at least 32 bytes"),
        ({"jwt": [{"issuer": "i", "algorithm": "RS256", "secret": "x" * 64}]}, "HS256"),
        ({"jwt": [{"issuer": "i", "algorithm": "none", "secret": "x" * 64}]}, "jwt[0]"),
        ({"jwt": [{"issuer": "i", "algorithm": "RS256", "public_key": "nope"}]}, "PEM"),
        ({"mtls": [{"subject": "garbage"}]}, "malformed DN"),
        ({"mtls": [{"subject": "CN=a", "san": "b"}]}, "exactly one"),
        ({"jwt": [{"issuer": "i", "secret": "x" * 32, "extra": 1}]}, "extra"),
    ],
)
def test_invalid_credentials_name_their_item(creds: dict, needle: str) -> None:
    with pytest.raises(ValueError) as ei:
        build({"username": "ok"}, {"username": "bad", "credentials": creds})
    msg = str(ei.value)
    assert msg.startswith("consumers[1].credentials."), msg
    assert needle.replace("consumers[0]", "consumers[1]") in msg


@pytest.mark.parametrize(
    "creds",
    [
        {"key_auth": [{"key": "same"}]},
        {"jwt": [{"issuer": "same", "secret": "y" * 32}]},
        {"mtls": [{"subject": "O=Acme, CN=alice"}]},
        {"basic_auth": [{"password_hash": ARGON, "username": "alice"}]},
    ],
)
def test_credential_claimed_twice_is_rejected(creds: dict) -> None:
    first = {
        "username": "alice",
        "credentials": {
            "key_auth": [{"key": "same"}],
            "jwt": [{"issuer": "same", "secret": "x" * 32}],
            "mtls": [{"subject": "CN=alice,O=Acme"}],
        },
    }
    with pytest.raises(ValueError, match=r"already belongs|duplicate|another consumer"):
        build(first, {"username": "mallory", "credentials": creds})


def test_duplicate_ids_rejected() -> None:
    with pytest.raises(ValueError, match="already used"):
        build({"username": "a", "id": "x"}, {"username": "b", "id": "x"})
