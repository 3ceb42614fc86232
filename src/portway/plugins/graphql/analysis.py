"""Measures of one GraphQL operation (pure; graphql-core's AST, no schema).

Depth, aliases and cost are computed over the operation with its fragments expanded, each
fragment measured once (memoised), so a document that spreads fragments exponentially costs
linear time to measure. A fragment cycle (invalid GraphQL) is an error, never a recursion.

- depth: a field without a selection set is depth 1; ``a { b { c } }`` is 3;
- aliases: every aliased field, counted once per place it ends up in the expanded operation;
- cost: a field costs its weight (``field_weights[name]``, default 1) plus its children's
  cost, multiplied by the value of its list-size argument (``first: 50``) when it has one
  (a literal or a variable's value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)

INTROSPECTION = frozenset({"__schema", "__type"})


class AnalysisError(ValueError):
    """The operation cannot be measured (fragment cycle or unknown fragment)."""


@dataclass(frozen=True, slots=True)
class Measure:
    depth: int = 0
    aliases: int = 0
    cost: int = 0
    introspection: bool = False


class Analyzer:
    """Measures an operation; one per request (holds the fragment memo)."""

    def __init__(
        self,
        fragments: Mapping[str, FragmentDefinitionNode],
        weights: Mapping[str, int],
        list_args: frozenset[str],
        variables: Mapping[str, Any],
    ) -> None:
        self.fragments = fragments
        self.weights = weights
        self.list_args = list_args
        self.variables = variables
        self._memo: dict[str, Measure] = {}
        self._active: set[str] = set()

    def operation(self, op: OperationDefinitionNode) -> Measure:
        return self.selection_set(op.selection_set)

    def selection_set(self, sel: SelectionSetNode | None) -> Measure:
        if sel is None:
            return Measure()
        depth = aliases = cost = 0
        intro = False
        for node in sel.selections:
            if isinstance(node, FieldNode):
                m = self.field(node)
            elif isinstance(node, InlineFragmentNode):
                m = self.selection_set(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                m = self.fragment(node.name.value)
            else:  # pragma: no cover - graphql-core has no other selection kinds
                continue
            depth = max(depth, m.depth)
            aliases += m.aliases
            cost += m.cost
            intro = intro or m.introspection
        return Measure(depth, aliases, cost, intro)

    def field(self, node: FieldNode) -> Measure:
        name = node.name.value
        inner = self.selection_set(node.selection_set)
        mult = self._multiplier(node)
        weight = self.weights.get(name, 1)
        return Measure(
            inner.depth + 1,
            inner.aliases + (1 if node.alias is not None else 0),
            weight + mult * inner.cost,
            inner.introspection or name in INTROSPECTION,
        )

    def fragment(self, name: str) -> Measure:
        m = self._memo.get(name)
        if m is not None:
            return m
        frag = self.fragments.get(name)
        if frag is None:
            raise AnalysisError(f"unknown fragment {name!r}")
        if name in self._active:
            raise AnalysisError(f"fragment {name!r} spreads itself (a cycle)")
        self._active.add(name)
        try:
            m = self.selection_set(frag.selection_set)
        finally:
            self._active.discard(name)
        self._memo[name] = m
        return m

    def _multiplier(self, node: FieldNode) -> int:
        for arg in node.arguments or ():
            if arg.name.value not in self.list_args:
                continue
            v = arg.value
            if isinstance(v, IntValueNode):
                return max(1, int(v.value))
            if isinstance(v, VariableNode):
                val = self.variables.get(v.name.value)
                if isinstance(val, int) and not isinstance(val, bool):
                    return max(1, val)
        return 1
