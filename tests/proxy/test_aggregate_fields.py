"""Per-call shaping and merging (pure)."""

from __future__ import annotations

from typing import Any

from portway.plugins._json.paths import parse
from portway.proxy.aggregate_fields import Shaping, deep_merge, project

DOC: dict[str, Any] = {
    "items": [{"id": 1, "name": "a", "secret": "s"}, {"id": 2, "name": "b", "secret": "t"}],
    "meta": {"total": 2, "page": {"n": 1, "size": 10}},
    "flag": True,
}


def test_allow_keeps_structure_to_the_selected_values() -> None:
    wanted = [parse(p).steps for p in ("items[*].name", "meta.page.n")]
    assert project(DOC, wanted) == {
        "items": [{"name": "a"}, {"name": "b"}],
        "meta": {"page": {"n": 1}},
    }
    assert project(DOC, [parse("items[-1]").steps]) == {"items": [DOC["items"][1]]}
    assert project(DOC, [parse("nope").steps]) == {}


def test_shaping_order_target_deny_allow_rename() -> None:
    s = Shaping(
        target=parse("items"),
        deny=(parse("[*].secret"),),
        allow=(parse("[*].id"), parse("[*].secret")),
        rename=((parse("[*].id"), "ident"),),
    )
    import copy

    assert s.apply(copy.deepcopy(DOC)) == [{"ident": 1}, {"ident": 2}]
    # a target that selects nothing gives null; shaping never raises on other shapes
    assert Shaping(target=parse("missing.x")).apply({"a": 1}) is None
    assert Shaping(deny=(parse("a.b"),)).apply([1, 2]) == [1, 2]


def test_deep_merge_objects_merge_and_later_wins() -> None:
    into: dict[str, Any] = {"a": {"x": 1, "y": 1}, "b": [1]}
    deep_merge(into, {"a": {"y": 2, "z": 3}, "b": [2]})
    assert into == {"a": {"x": 1, "y": 2, "z": 3}, "b": [2]}
