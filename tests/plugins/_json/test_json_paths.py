"""JSON paths: parsing, and remove / rename / set / move on documents of any shape."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portway.plugins._json import paths
from portway.plugins._json.paths import PathError, parse


@pytest.mark.parametrize(
    "text, steps",
    [
        ("a", ("a",)),
        ("meta.source", ("meta", "source")),
        ("items[*].secret", ("items", None, "secret")),
        ("items[0].name", ("items", 0, "name")),
        ("m[*][-1].v", ("m", None, -1, "v")),
        ("[*].id", (None, "id")),
        ("a b.c-d", ("a b", "c-d")),
    ],
)
def test_parse(text: str, steps: tuple[Any, ...]) -> None:
    assert parse(text).steps == steps


@pytest.mark.parametrize("bad", ["", ".a", "a.", "a..b", "a[", "a[x]", "a[*]b", "a]"])
def test_parse_errors(bad: str) -> None:
    with pytest.raises(PathError):
        parse(bad)


def test_remove_nested_arrays_and_indexes() -> None:
    doc = {"g": [{"m": [{"t": 1, "k": 1}, {"t": 2}]}, {"m": []}, {"x": 1}], "l": [1, 2, 3]}
    assert paths.remove(doc, parse("g[*].m[*].t")) == 2
    assert paths.remove(doc, parse("l[-1]")) == 1
    assert paths.remove(doc, parse("missing.deep[*].x")) == 0
    assert doc == {"g": [{"m": [{"k": 1}, {}]}, {"m": []}, {"x": 1}], "l": [1, 2]}
    assert paths.remove(doc, parse("l[*]")) == 2 and doc["l"] == []


def test_rename_keeps_order_and_overwrites() -> None:
    doc = {"a": 1, "b": 2, "c": 3}
    assert paths.rename(doc, parse("a"), "c") == 1
    assert list(doc.items()) == [("c", 1), ("b", 2)]
    rows = [{"id": 1, "v": 0}, {"v": 1}]
    assert paths.rename(rows, parse("[*].id"), "rowId") == 1
    assert rows == [{"rowId": 1, "v": 0}, {"v": 1}]


def test_set_creates_objects_never_arrays_and_never_clobbers() -> None:
    doc: dict[str, Any] = {"items": [{"a": 1}, 5], "s": "str"}
    assert paths.set_value(doc, parse("meta.source"), "gw") == 1
    assert paths.set_value(doc, parse("items[*].seen"), True) == 1  # 5 is not an object
    assert paths.set_value(doc, parse("items[9]"), 0) == 0  # never extends an array
    assert paths.set_value(doc, parse("s.x"), 1) == 0  # a string is not replaced by an object
    assert paths.set_value(doc, parse("items[1]"), {"b": 2}) == 1
    assert doc == {
        "items": [{"a": 1, "seen": True}, {"b": 2}],
        "s": "str",
        "meta": {"source": "gw"},
    }


def test_set_copies_the_value_per_place() -> None:
    doc = {"r": [{}, {}]}
    value = {"k": []}
    paths.set_value(doc, parse("r[*].x"), value)
    doc["r"][0]["x"]["k"].append(1)
    assert doc["r"][1]["x"] == {"k": []} and value == {"k": []}


def test_move() -> None:
    doc = {"a": {"b": 1}}
    assert paths.move(doc, parse("a.b"), parse("c.d")) == 1
    assert doc == {"a": {}, "c": {"d": 1}}
    assert paths.move(doc, parse("zz"), parse("c.e")) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)
    ),
    max_leaves=20,
)
path_texts = st.lists(
    st.sampled_from(["a", "b", "c", "[*]", "[0]", "[-1]"]), min_size=1, max_size=4
).map(
    lambda parts: "".join(
        p if p.startswith("[") or i == 0 else "." + p for i, p in enumerate(parts)
    )
)


@settings(max_examples=300, deadline=None)
@given(doc=json_values, text=path_texts)
def test_edits_never_fail_and_remove_then_select_is_empty(doc: Any, text: str) -> None:
    try:
        path = parse(text)
    except PathError:
        return
    before = copy.deepcopy(doc)
    found = len(paths.select(doc, path))
    removed = paths.remove(doc, path)
    if path.steps[-1] is None or isinstance(path.steps[-1], int):
        assert removed <= found  # index selectors shift as elements go
    else:
        assert removed == found
        assert paths.select(doc, path) == []
    doc = copy.deepcopy(before)
    n = paths.set_value(doc, path, "X")
    assert all(v == "X" for v in paths.select(doc, path)) and len(paths.select(doc, path)) >= min(
        n, 1
    )
