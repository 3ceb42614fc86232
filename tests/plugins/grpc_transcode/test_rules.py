"""Path templates of google.api.http rules (pure logic)."""

from __future__ import annotations

import pytest

from portway.plugins.grpc_transcode.rules import RulesError, compile_template


@pytest.mark.parametrize(
    ("template", "path", "fields"),
    [
        (
            "/v1/shelves/{shelf.id}/books/{book_id}",
            "/v1/shelves/1/books/2",
            {"shelf.id": "1", "book_id": "2"},
        ),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/a/books/b", {"name": "shelves/a/books/b"}),
        ("/v1/books/{name=**}", "/v1/books/a/b/c", {"name": "a/b/c"}),
        (
            "/v1/{parent=projects/*}/items:batchGet",
            "/v1/projects/p/items:batchGet",
            {"parent": "projects/p"},
        ),
        ("/v1/things:search", "/v1/things:search", {}),
        ("/v1/*/x", "/v1/any/x", {}),
    ],
)
def test_template_matches(template: str, path: str, fields: dict[str, str]) -> None:
    rx, groups = compile_template(template)
    m = rx.fullmatch(path)
    assert m is not None
    assert {fp: m.group(g) for g, fp in groups} == fields


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/shelves/{id}", "/v1/shelves/1/2"),  # * is one segment
        ("/v1/{name=shelves/*}", "/v1/books/1"),
        ("/v1/things:search", "/v1/things:other"),
        ("/v1/x", "/v1/x/"),
    ],
)
def test_template_rejects(template: str, path: str) -> None:
    rx, _ = compile_template(template)
    assert rx.fullmatch(path) is None


@pytest.mark.parametrize("bad", ["v1/x", "/v1/{unclosed", "/v1/}x"])
def test_bad_templates(bad: str) -> None:
    with pytest.raises(RulesError):
        compile_template(bad)
