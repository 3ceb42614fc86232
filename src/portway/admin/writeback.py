"""``write_back``: put a config applied through the admin API into the operator's file while
keeping the file the operator wrote — its comments, order, quoting, ``${ENV}`` references and
the defaults it leaves out — and changing only what the new config changes.

The file is loaded with ruamel.yaml's round-trip loader and the new document is merged into it
node by node. A key is rewritten only when its *meaning* changed: both sides are also loaded
as configs and compared there, so ``read: 2s`` against ``2.0``, or ``${API_KEY}`` against its
value, count as unchanged, and a key the new document spells out at its default (a whole
``GET /config`` sent back) is not added. List items with a ``name`` or ``username`` are
matched by it, so deleting one consumer leaves the others and their comments in place.
If the merged text does not load to the applied config, the new text is written as is.
"""

from __future__ import annotations

import io
import itertools
import logging
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from portway.admin.source import load_source

log = logging.getLogger("portway.admin")

_MISSING: Any = object()
_KEYS = ("name", "username")
Path = tuple[str | int, ...]


def _effective(text: str) -> Any:
    from portway.config.errors import ConfigError
    from portway.config.loader import load_config_text

    try:
        return load_config_text(text, "<write_back>").model_dump(mode="json")
    except ConfigError:
        return None


def _at(data: Any, path: Path) -> Any:
    for k in path:
        in_list = isinstance(k, int) and isinstance(data, list) and 0 <= k < len(data)
        if not (in_list or (isinstance(k, str) and isinstance(data, dict) and k in data)):
            return _MISSING
        data = data[k]
    return data


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


class _Merge:
    def __init__(self, old_eff: Any, new_eff: Any) -> None:
        self.old_eff = old_eff
        self.new_eff = new_eff

    def same_meaning(self, old_path: Path, new_path: Path) -> bool:
        if self.old_eff is None or self.new_eff is None:
            return False
        a = _at(self.old_eff, old_path)
        return a is not _MISSING and a == _at(self.new_eff, new_path)

    def mapping(self, node: CommentedMap, new: dict[str, Any], op: Path, np: Path) -> None:
        for k in [k for k in node if k not in new]:
            del node[k]
        for k, v in new.items():
            if k in node:
                self.value(node, k, v, (*op, k), (*np, k))
            elif not self.same_meaning((*op, k), (*np, k)):
                node[k] = v

    def value(self, parent: Any, key: Any, new: Any, op: Path, np: Path) -> None:
        old = parent[key]
        if _plain(old) == new or self.same_meaning(op, np):
            return
        if isinstance(old, CommentedMap) and isinstance(new, dict):
            self.mapping(old, new, op, np)
        elif isinstance(old, CommentedSeq) and isinstance(new, list):
            self.sequence(old, new, op, np)
        else:
            parent[key] = new

    def sequence(self, node: CommentedSeq, new: list[Any], op: Path, np: Path) -> None:
        if len(node) == len(new):
            for i, v in enumerate(new):
                self.value(node, i, v, (*op, i), (*np, i))
            return
        old_keys = [_item_key(x) for x in node]
        new_keys = [_item_key(x) for x in new]
        kept = [k for k in old_keys if k in new_keys]
        if None in old_keys or None in new_keys or kept != new_keys[: len(kept)]:
            node[:] = new  # no stable identity to match items by: the list is rewritten
            return
        # removals anywhere, additions at the end: keep the surviving items (and comments)
        for i in reversed(range(len(node))):
            if old_keys[i] not in new_keys:
                del node[i]
        old_index = {k: i for i, k in enumerate(old_keys) if k in new_keys}
        for j, k in enumerate(kept):
            self.value(node, j, new[j], (*op, old_index[k]), (*np, j))
        for v in new[len(kept) :]:
            node.append(v)


def _item_key(item: Any) -> str | None:
    if isinstance(item, dict):
        for k in _KEYS:
            v = item.get(k)
            if isinstance(v, str):
                return f"{k}={v}"
    return None


def _mapping_indent(text: str) -> int:
    """How far the file indents a block mapping under its key (2 when it never does)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for a, b in itertools.pairwise(lines):
        opens = a.rstrip().endswith(":") and not a.lstrip().startswith("-")
        if opens and not b.lstrip().startswith("-"):
            d = (len(b) - len(b.lstrip())) - (len(a) - len(a.lstrip()))
            if d > 0:
                return d
    return 2


def _yaml(text: str) -> YAML:
    from ruamel.yaml.util import load_yaml_guess_indent

    _, seq, offset = load_yaml_guess_indent(text)
    y = YAML()  # round-trip: comments, order and quoting are kept
    y.preserve_quotes = True
    y.width = 4096
    y.brace_single_entry_mapping_in_flow_sequence = True
    # the file's own indentation, so untouched lines stay byte for byte
    m = _mapping_indent(text)
    off = offset if offset is not None else 0
    y.indent(mapping=m, sequence=seq if seq is not None else off + 2, offset=off)
    return y


def merge_text(old_text: str, new_text: str) -> str:
    """``old_text`` (the operator's file) changed exactly as far as ``new_text`` differs."""
    y = _yaml(old_text)
    doc = y.load(old_text)
    if not isinstance(doc, CommentedMap):
        return new_text
    new = load_source(new_text)
    _Merge(_effective(old_text), _effective(new_text)).mapping(doc, new, (), ())
    out = io.StringIO()
    y.dump(doc, out)
    merged = out.getvalue()
    want = _effective(new_text)
    if want is None or _effective(merged) != want:
        log.warning("write_back: merging into the file changed its meaning; wrote it whole")
        return new_text
    return merged
