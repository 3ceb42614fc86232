"""Aggregate path templates and the call dependency order (pure)."""

from __future__ import annotations

import pytest

from portway.config.aggregate import (
    Ref,
    TemplateError,
    dependencies,
    param_names,
    parse_template,
    plan_order,
)


def test_template_parts() -> None:
    t = parse_template("/stock/{product.sku}?p={params.id}&t={product.tags[0]}")
    assert t[0] == "/stock/"
    assert isinstance(t[1], Ref) and t[1].source == "product" and t[1].path.text == "sku"
    assert dependencies(t) == {"product"}
    assert param_names(t) == {"id"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stock", "must start with '/'"),
        ("/a/{id}", "use {params.NAME}"),
        ("/a/{product.items[*].id}", "[*] selects many values"),
        ("/a/{params.a.b}", "a route parameter is one name"),
        ("/a/{x.}", "use {params.NAME}"),
        ("/a/}", "unbalanced"),
        ("/a b", "percent-encoding"),
        ("/é", "percent-encoding"),
    ],
)
def test_bad_templates(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        parse_template(text)
    assert message in str(e.value)


def _order(paths: dict[str, str]) -> list[str]:
    names = list(paths)
    idx = plan_order(names, [parse_template(p) for p in paths.values()])
    return [names[i] for i in idx]


def test_order_puts_dependencies_first_and_keeps_config_order_otherwise() -> None:
    order = _order({"c": "/c/{b.x}", "a": "/a", "b": "/b/{a.y}", "d": "/d"})
    assert order == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("paths", "message", "index"),
    [
        ({"a": "/a/{b.x}", "b": "/b/{c.x}", "c": "/c/{a.x}"}, "cycle: a -> b -> c -> a", 0),
        ({"a": "/a/{a.x}"}, "refers to its own result", 0),
        ({"a": "/a", "b": "/b/{z.x}"}, "unknown call 'z'", 1),
    ],
)
def test_rejected_graphs(paths: dict[str, str], message: str, index: int) -> None:
    with pytest.raises(TemplateError) as e:
        _order(paths)
    assert message in str(e.value)
    assert e.value.index == index


def test_duplicate_and_reserved_names() -> None:
    with pytest.raises(TemplateError, match="duplicate call name"):
        plan_order(["a", "a"], [parse_template("/a"), parse_template("/b")])
    with pytest.raises(TemplateError, match="may not be named 'params'"):
        plan_order(["params"], [parse_template("/a")])
