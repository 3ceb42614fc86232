"""What an aggregate does to one call's JSON result, and how results are merged (pure).

Per call, in this order (KrakenD's): ``target`` (take a sub-object), ``fields.deny`` (drop
paths), ``fields.allow`` (keep only these paths), ``fields.rename`` (path -> new key); the
merge then puts it under ``group`` (or, when nesting, the call's name). Paths use the
``response_transformer`` syntax (:mod:`portway.plugins._json.paths`: ``items[*].secret``).
Nothing here raises on a document of another shape: a path that does not apply selects
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from portway.plugins._json import paths
from portway.plugins._json.paths import JsonPath, Step


@dataclass(frozen=True, slots=True)
class Shaping:
    """The compiled ``target``/``fields``/``group`` of one call."""

    target: JsonPath | None = None
    deny: tuple[JsonPath, ...] = ()
    allow: tuple[JsonPath, ...] = ()
    rename: tuple[tuple[JsonPath, str], ...] = ()
    group: str | None = None

    def apply(self, doc: Any) -> Any:
        if self.target is not None:
            found = paths.select(doc, self.target)
            doc = found[0] if len(found) == 1 else found if found else None
        for p in self.deny:
            paths.remove(doc, p)
        if self.allow:
            doc = project(doc, [p.steps for p in self.allow])
        for p, new in self.rename:
            paths.rename(doc, p, new)
        return doc  # ``group`` is applied by the merge (nest: the key; flat: a sub-object)


def _index_matches(step: Step, i: int, n: int) -> bool:
    if step is None:
        return True
    if isinstance(step, int):
        return (step + n if step < 0 else step) == i
    return False


def project(node: Any, wanted: Sequence[tuple[Step, ...]]) -> Any:
    """The parts of ``node`` the paths (as step tuples) select, with the structure leading to
    them: ``items[*].name`` keeps ``items`` as a list of objects holding only ``name``. A path
    that ends at a node keeps all of it; where nothing matches, an object becomes ``{}``."""
    if any(not w for w in wanted):
        return node
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            rest = [w[1:] for w in wanted if w[0] == k]
            if rest:
                out[k] = project(v, rest)
        return out
    if isinstance(node, list):
        n = len(node)
        kept: list[Any] = []
        for i, v in enumerate(node):
            rest = [
                w[1:] for w in wanted if not isinstance(w[0], str) and _index_matches(w[0], i, n)
            ]
            if rest:
                kept.append(project(v, rest))
        return kept
    return None


def deep_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Merge ``other`` into ``into``: objects merge key by key, anything else is replaced
    (the later call in config order wins)."""
    for k, v in other.items():
        cur = into.get(k)
        if isinstance(cur, dict) and isinstance(v, dict):
            deep_merge(cur, v)
        else:
            into[k] = v
