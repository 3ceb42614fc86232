"""The path index of one host tier: an exact-path dict, a segment tree for template and
prefix forms, and the regex list.

The segment tree has one edge per path segment, so a lookup walks at most one node per
request segment per branch (literal child, then ``{param}`` child) whatever the number of
routes; each node carries the entries that end there, already in priority order:

- ``prefix``: prefix forms whose literal segments end here (match whatever follows);
- ``terminal``: templates that end here (match only when the path ends here too);
- ``catchall``: templates whose ``{x:path}`` starts here (match when a ``/`` follows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from portway.config.paths import PathKind
from portway.http.headers import Headers
from portway.routing.entry import Entry

__all__ = ["Found", "PathTable"]

_NONE: Final[tuple[Entry, ...]] = ()

#: (best entry or None, its regex match for regex forms, number of entries examined)
Found = tuple["Entry | None", "re.Match[str] | None", int]


class _Node:
    __slots__ = ("catchall", "children", "param", "prefix", "terminal")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.prefix: tuple[Entry, ...] = _NONE
        self.terminal: tuple[Entry, ...] = _NONE
        self.catchall: tuple[Entry, ...] = _NONE

    def collect(self, segs: list[str], i: int, n: int, out: list[tuple[Entry, ...]]) -> None:
        """Append every entry list whose path form matches ``segs`` (from segment ``i``)."""
        node = self
        while True:
            if node.prefix:
                out.append(node.prefix)
            if i == n:
                if node.terminal:
                    out.append(node.terminal)
                return
            if node.catchall:
                out.append(node.catchall)
            seg = segs[i]
            i += 1
            if node.param is not None and seg:
                node.param.collect(segs, i, n, out)
            nxt = node.children.get(seg)
            if nxt is None:
                return
            node = nxt


def _accepts(e: Entry, method: str, headers: Headers) -> bool:
    if e.methods is not None and method not in e.methods:
        return False
    return not e.headers or e.accepts_headers(headers)


class PathTable:
    """Immutable after construction; ``entries`` must arrive in rank order."""

    __slots__ = ("exact", "regex", "root", "tree")

    def __init__(self, entries: Iterable[Entry]) -> None:
        exact: dict[str, list[Entry]] = {}
        regex: list[Entry] = []
        root = _Node()
        lists: dict[tuple[int, str], list[Entry]] = {}
        nodes: dict[int, _Node] = {}
        for e in entries:
            f = e.form
            if f.kind is PathKind.EXACT:
                exact.setdefault(f.literal, []).append(e)
                continue
            if f.kind is PathKind.REGEX:
                regex.append(e)
                continue
            node = root
            for seg in f.segments:
                if seg is None:
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    node = node.children.setdefault(seg, _Node())
            slot = {
                PathKind.PREFIX: "prefix",
                PathKind.TEMPLATE: "terminal",
                PathKind.CATCHALL: "catchall",
            }[f.kind]
            nodes[id(node)] = node
            lists.setdefault((id(node), slot), []).append(e)
        for (nid, slot), lst in lists.items():
            setattr(nodes[nid], slot, tuple(lst))
        self.exact = {k: tuple(v) for k, v in exact.items()}
        self.regex = tuple(regex)
        self.root = root
        self.tree = bool(lists)

    def find(self, method: str, path: str, segs: list[str], headers: Headers) -> Found:
        """The best entry whose path form, method and headers match (``None`` if none)."""
        considered = 0
        lst = self.exact.get(path)
        if lst is not None:
            for e in lst:
                considered += 1
                if _accepts(e, method, headers):
                    return e, None, considered
        if self.tree:
            out: list[tuple[Entry, ...]] = []
            self.root.collect(segs, 0, len(segs), out)
            best: Entry | None = None
            # Deeper nodes usually hold the longer (better) forms: visit them first to prune.
            for cands in reversed(out):
                for e in cands:
                    if best is not None and e.rank >= best.rank:
                        break
                    considered += 1
                    if _accepts(e, method, headers):
                        best = e
                        break
            if best is not None:
                return best, None, considered
        for e in self.regex:
            rx = e.form.regex
            assert rx is not None
            considered += 1
            if _accepts(e, method, headers):
                m = rx.match(path)
                if m is not None:
                    return e, m, considered
        return None, None, considered

    def path_matches(self, path: str, segs: list[str]) -> list[Entry]:
        """Every entry whose path form matches, in no particular order (slow path: 405)."""
        found: list[Entry] = list(self.exact.get(path, _NONE))
        out: list[tuple[Entry, ...]] = []
        self.root.collect(segs, 0, len(segs), out)
        for cands in out:
            found.extend(cands)
        for e in self.regex:
            rx = e.form.regex
            if rx is not None and rx.match(path) is not None:
                found.append(e)
        return found
