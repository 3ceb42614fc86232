"""Aggregate call path templates and their dependency graph (pure functions, no I/O).

A call's ``path`` is a template: literal text with ``{params.NAME}`` (a route parameter) and
``{CALL.JSON_PATH}`` (a value from the JSON result of an earlier call, e.g. ``{product.sku}``
or ``{product.tags[0]}``) placeholders. A call that refers to another call depends on it, and
runs after exactly the calls it refers to. :func:`plan_order` checks the references (unknown
call, self reference, cycle) and returns the calls in an order where every call follows its
dependencies; it raises :class:`TemplateError` with the call index to blame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from portway.config import jsonpath as paths
from portway.config.jsonpath import JsonPath, PathError

_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
#: the source a ``{params.X}`` placeholder reads
PARAMS: Final = "params"


class TemplateError(ValueError):
    """A template or a reference between calls that cannot be served (raised at load).

    ``index`` is the position of the call to blame in ``calls``."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, slots=True)
class Ref:
    """One placeholder: ``source`` is ``"params"`` or a call name; ``path`` the JSON path
    inside the call's result (for params: a one-key path, the parameter name)."""

    source: str
    path: JsonPath

    @property
    def text(self) -> str:
        return "{" + self.source + "." + self.path.text + "}"


#: a parsed template: literal strings and references, in order
Template = tuple[str | Ref, ...]


def parse_template(text: str) -> Template:
    """Split ``text`` into literals and :class:`Ref` placeholders; raise :class:`TemplateError`."""
    if not text.startswith("/"):
        raise TemplateError(f"call path {text!r} must start with '/'")
    if not text.isascii() or any(ch <= " " or ch == "\x7f" for ch in text):
        raise TemplateError(f"call path {text!r}: use percent-encoding for spaces and non-ASCII")
    parts: list[str | Ref] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        inner = m.group(1)
        source, dot, rest = inner.partition(".")
        if not source or not dot or not rest:
            raise TemplateError(
                f"placeholder {m.group(0)!r} in {text!r}: use {{params.NAME}} or "
                "{CALL.JSON_PATH} (e.g. {product.sku})"
            )
        try:
            path = paths.parse(rest)
        except PathError as e:
            raise TemplateError(f"placeholder {m.group(0)!r}: {e}") from None
        if path.wildcard:
            raise TemplateError(f"placeholder {m.group(0)!r}: [*] selects many values; use [N]")
        if source == PARAMS and (len(path.steps) != 1 or path.last_key is None):
            raise TemplateError(f"placeholder {m.group(0)!r}: a route parameter is one name")
        parts.append(Ref(source, path))
        pos = m.end()
    rest_text = text[pos:]
    if "{" in rest_text or "}" in rest_text:
        raise TemplateError(f"call path {text!r} has an unbalanced '{{' or '}}'")
    if rest_text:
        parts.append(rest_text)
    return tuple(parts)


def dependencies(template: Template) -> frozenset[str]:
    """The call names ``template`` reads from."""
    return frozenset(p.source for p in template if isinstance(p, Ref) and p.source != PARAMS)


def param_names(template: Template) -> frozenset[str]:
    """The route parameters ``template`` reads."""
    return frozenset(
        str(p.path.last_key) for p in template if isinstance(p, Ref) and p.source == PARAMS
    )


def plan_order(names: Sequence[str], templates: Sequence[Template]) -> list[int]:
    """Indexes of the calls in an order where each follows the calls it depends on (config
    order otherwise kept). Raises :class:`TemplateError` for a duplicate name, a reference to
    an unknown call or to itself, and a cycle (naming the calls on it)."""
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        if n == PARAMS:
            raise TemplateError(f"a call may not be named {PARAMS!r}", i)
        if n in index:
            raise TemplateError(f"duplicate call name {n!r} (first is calls[{index[n]}])", i)
        index[n] = i
    deps: list[frozenset[str]] = []
    for i, t in enumerate(templates):
        d = dependencies(t)
        for src in sorted(d):
            if src == names[i]:
                raise TemplateError(f"call {names[i]!r} refers to its own result", i)
            if src not in index:
                known = ", ".join(sorted(index)) or "none"
                raise TemplateError(
                    f"call {names[i]!r} refers to unknown call {src!r} (calls: {known})", i
                )
        deps.append(d)
    order: list[int] = []
    state = [0] * len(names)  # 0 new, 1 on the stack, 2 done

    def visit(i: int, stack: list[int]) -> None:
        if state[i] == 2:
            return
        if state[i] == 1:
            cycle = [names[j] for j in stack[stack.index(i) :]] + [names[i]]
            raise TemplateError("calls depend on each other in a cycle: " + " -> ".join(cycle), i)
        state[i] = 1
        stack.append(i)
        for src in sorted(deps[i], key=lambda n: index[n]):
            visit(index[src], stack)
        stack.pop()
        state[i] = 2
        order.append(i)

    for i in range(len(names)):
        visit(i, [])
    return order
