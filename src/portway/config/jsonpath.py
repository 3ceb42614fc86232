"""Dotted JSON paths and the edits made through them (pure functions, no I/O).

A path is a dot-separated list of object keys, each optionally followed by array selectors:
``[*]`` (every element) or ``[N]`` (element N, negative counts from the end). A path may also
start with a selector to address a top-level array::

    meta.source          {"meta": {"source": ...}}
    items[*].secret      the "secret" key of every element of "items"
    items[0].name        the first element only
    [*].id               every element of a top-level array
    matrix[*][*].v       nested arrays

Keys may contain any character but ``.``, ``[`` and ``]``. Edits never fail on a document of
another shape: a step that does not apply (missing key, not an object, index out of range)
simply selects nothing, so one rule serves responses of several shapes.

Operations (in the order the transformers apply them): :func:`remove`, :func:`rename`,
:func:`set_value`. Each edits the document in place and returns how many places it touched.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Final

#: one selector: ``[*]`` or ``[N]``
_SELECTOR: Final = re.compile(r"\[(\*|-?\d+)\]")
_KEY: Final = re.compile(r"[^.\[\]]+")

#: a step is a key (str), every element (None) or one index (int)
Step = str | int | None


class PathError(ValueError):
    """A path that cannot be parsed (a config error, raised at load)."""


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A parsed path; build with :func:`parse`."""

    text: str
    steps: tuple[Step, ...]

    @property
    def wildcard(self) -> bool:
        return any(s is None for s in self.steps)

    @property
    def last_key(self) -> str | None:
        """The final step when it is an object key (rename needs one)."""
        last = self.steps[-1]
        return last if isinstance(last, str) else None

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> JsonPath:
    """Parse ``text``; raise :class:`PathError` with the offending position."""
    if not text:
        raise PathError("empty JSON path")
    steps: list[Step] = []
    pos = 0
    n = len(text)
    expect_key = not text.startswith("[")
    while pos < n:
        if expect_key:
            m = _KEY.match(text, pos)
            if m is None:
                raise PathError(f"JSON path {text!r}: expected a key at position {pos}")
            steps.append(m.group(0))
            pos = m.end()
        while pos < n and text[pos] == "[":
            m = _SELECTOR.match(text, pos)
            if m is None:
                raise PathError(f"JSON path {text!r}: expected [*] or [N] at position {pos}")
            sel = m.group(1)
            steps.append(None if sel == "*" else int(sel))
            pos = m.end()
        if pos < n:
            if text[pos] != "." or pos + 1 >= n:
                raise PathError(f"JSON path {text!r}: unexpected {text[pos]!r} at position {pos}")
            pos += 1
            expect_key = True
    return JsonPath(text, tuple(steps))


def _children(node: Any, step: Step) -> list[tuple[Any, str | int]]:
    """(container, key-or-index) pairs ``step`` selects inside ``node`` (existing only)."""
    if isinstance(step, str):
        if isinstance(node, dict) and step in node:
            return [(node, step)]
        return []
    if not isinstance(node, list):
        return []
    if step is None:
        return [(node, i) for i in range(len(node))]
    i = step + len(node) if step < 0 else step
    return [(node, i)] if 0 <= i < len(node) else []


def _parents(doc: Any, steps: tuple[Step, ...]) -> list[Any]:
    """The nodes that ``steps`` select (all steps must exist)."""
    nodes = [doc]
    for step in steps:
        nodes = [c[k] for node in nodes for c, k in _children(node, step)]
        if not nodes:
            break
    return nodes


def select(doc: Any, path: JsonPath) -> list[Any]:
    """Every value ``path`` selects in ``doc``."""
    return _parents(doc, path.steps)


def remove(doc: Any, path: JsonPath) -> int:
    """Delete every value ``path`` selects; array elements are removed (later ones shift)."""
    count = 0
    for parent in _parents(doc, path.steps[:-1]):
        targets = _children(parent, path.steps[-1])
        # delete from the end so earlier indexes stay valid
        for container, key in reversed(targets):
            del container[key]
            count += 1
    return count


def rename(doc: Any, path: JsonPath, new_key: str) -> int:
    """Rename the key selected by ``path`` (which must end with a key) to ``new_key``, in
    every object selected; an existing ``new_key`` is overwritten, key order is kept."""
    old = path.last_key
    if old is None:
        raise PathError(f"JSON path {path.text!r} must end with an object key to be renamed")
    count = 0
    for parent in _parents(doc, path.steps[:-1]):
        if isinstance(parent, dict) and old in parent and old != new_key:
            items = [(new_key if k == old else k, v) for k, v in parent.items() if k != new_key]
            parent.clear()
            parent.update(items)
            count += 1
    return count


def move(doc: Any, src: JsonPath, dst: JsonPath) -> int:
    """Move the value at ``src`` (no wildcard) to ``dst`` (created as :func:`set_value` does)."""
    found = select(doc, src)
    if len(found) != 1:
        return 0
    value = found[0]
    remove(doc, src)
    return set_value(doc, dst, value)


def set_value(doc: Any, path: JsonPath, value: Any) -> int:
    """Set ``path`` to ``value`` (a deep copy per place) in every place it selects.

    Missing object keys along the way are created as objects (so ``meta.source`` works on a
    document without ``meta``); arrays are never created or extended: ``[*]`` applies to the
    elements that exist and ``[N]`` only replaces an existing element. A step that meets a
    value of the wrong type selects nothing (the value is never clobbered)."""
    nodes = [doc]
    steps = path.steps
    for step in steps[:-1]:
        nxt: list[Any] = []
        for node in nodes:
            if isinstance(step, str) and isinstance(node, dict) and step not in node:
                node[step] = {}
            nxt.extend(c[k] for c, k in _children(node, step))
        nodes = nxt
        if not nodes:
            return 0
    last = steps[-1]
    count = 0
    for node in nodes:
        if isinstance(last, str):
            if isinstance(node, dict):
                node[last] = copy.deepcopy(value)
                count += 1
            continue
        for container, key in _children(node, last):
            container[key] = copy.deepcopy(value)
            count += 1
    return count
