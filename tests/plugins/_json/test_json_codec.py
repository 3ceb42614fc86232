"""The rewrite codec keeps every value exact (orjson would turn big integers into floats)."""

from __future__ import annotations

import pytest

from portway.plugins._json import codec
from portway.plugins._json.rules import JsonRules


def test_plain_documents_take_orjson() -> None:
    doc, exact = codec.loads(b'{"a": [1, 2.5, "x", null, true]}')
    assert not exact and doc == {"a": [1, 2.5, "x", None, True]}
    assert codec.dumps(doc, exact) == b'{"a":[1,2.5,"x",null,true]}'


def test_big_integers_survive_a_rewrite() -> None:
    raw = b'{"id": 123456789012345678901234567890, "n": -98765432109876543210, "s": "\xc3\xa9"}'
    doc, exact = codec.loads(raw)
    assert exact and doc["id"] == 123456789012345678901234567890
    doc["x"] = 1
    out = codec.dumps(doc, exact)
    assert b"123456789012345678901234567890" in out and b"-98765432109876543210" in out
    assert "é".encode() in out


@pytest.mark.parametrize(
    "bad", [b"{", b"", b"[1,]", b"NaN", b'{"a": 12345678901234567890, "b": NaN}']
)
def test_invalid_json_raises(bad: bytes) -> None:
    with pytest.raises(codec.JsonCodecError):
        codec.loads(bad)


def test_set_values_must_be_json() -> None:
    with pytest.raises(ValueError, match="not a JSON value"):
        JsonRules.model_validate({"set": {"a": float("nan")}})
