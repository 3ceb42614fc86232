"""YAML text → plain data plus a path→line map, with the safety rules of a config format.

Parsing works from PyYAML's event stream (libyaml when available) into a small node tree that
remembers lines, then expands it to plain ``dict``/``list``/scalar data while recording the
1-based line of every mapping key and sequence item. On the way it substitutes ``${ENV}``
references, applies ``<<`` merge keys, and refuses duplicate keys, unknown tags, recursive
aliases, excessive nesting and alias bombs.

Scalars resolve by the YAML 1.2 core schema, not PyYAML's YAML 1.1 default, so ``on``, ``yes``
and ``no`` stay strings (``retries: {on: [...]}`` must not become ``{True: [...]}``) and
timestamps stay strings. Mapping keys are always their literal text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from portway.config.errors import ConfigError, ConfigIssue, Path

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_TEXT_BYTES",
    "YamlDocument",
    "parse_yaml",
    "substitute_env",
]

#: refuse config texts larger than this before parsing
MAX_TEXT_BYTES = 16 * 1024 * 1024
#: nesting limit; real configs stay under ~12 levels
MAX_DEPTH = 64
#: nodes after alias expansion; bounds "billion laughs" documents
MAX_NODES = 500_000

_Parser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# -- node tree --------------------------------------------------------------------------------


class _Scalar:
    __slots__ = ("error", "line", "merge", "text", "value")

    def __init__(self, text: str, value: Any, line: int) -> None:
        self.text = text
        self.value = value
        self.line = line
        self.merge = False
        self.error: str | None = None


class _Seq:
    __slots__ = ("children", "line")

    def __init__(self, line: int) -> None:
        self.children: list[_Node] = []
        self.line = line


class _Map:
    __slots__ = ("children", "line")

    def __init__(self, line: int) -> None:
        self.children: list[_Node] = []  # key, value, key, value, ...
        self.line = line


_Node = _Scalar | _Seq | _Map

_TAG = "tag:yaml.org,2002:"
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")


def _to_int(text: str) -> int:
    if text[:2] in ("0o", "0x"):
        return int(text, 0)
    return int(text)


def _to_float(text: str) -> float:
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return float(text)


def _resolve_plain(text: str) -> Any:
    """YAML 1.2 core schema resolution of an untagged plain scalar."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text):
        return _to_int(text)
    if _FLOAT.fullmatch(text) or _INF.fullmatch(text) or _NAN.fullmatch(text):
        return _to_float(text)
    return text


def _to_bool(text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def _to_null(text: str) -> None:
    if text not in _NULLS:
        raise ValueError(text)


#: the standard tags a config may spell out (``!!str 8080``); anything else is refused
_EXPLICIT: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "null": _to_null,
}


def _scalar(ev: yaml.ScalarEvent, line: int) -> _Scalar:
    text: str = ev.value
    tag = ev.tag
    node = _Scalar(text, text, line)
    if tag is None or tag == "!":
        # only plain scalars are resolved; quoted and block scalars, and "!", mean a string
        if tag is None and ev.style in (None, ""):
            node.merge = text == "<<"
            node.value = _resolve_plain(text)
        return node
    convert = _EXPLICIT.get(tag[len(_TAG) :]) if tag.startswith(_TAG) else None
    if convert is None:
        node.error = f"unsupported YAML tag {tag!r}"
        return node
    try:
        node.value = convert(text)
    except ValueError:
        node.error = f"{text!r} is not a valid {tag.replace(_TAG, '!!')}"
    return node


def _syntax_issue(exc: yaml.YAMLError, text: str) -> ConfigIssue:
    if isinstance(exc, yaml.reader.ReaderError):
        pos = exc.position
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return ConfigIssue(
            "", line, f"invalid character {chr(exc.character)!r} in the document", col
        )
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        lines = text.splitlines()
        if 0 <= mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
            problem = "tab characters are not allowed in indentation; use spaces"
        elif exc.context:
            problem = f"{problem} ({exc.context}"
            if exc.context_mark is not None and exc.context_mark.line != mark.line:
                problem += f" started at line {exc.context_mark.line + 1}"
            problem += ")"
        return ConfigIssue("", mark.line + 1, f"YAML syntax error: {problem}", mark.column + 1)
    return ConfigIssue("", None, f"YAML syntax error: {exc}")


def _compose(text: str, source: str) -> _Node | None:
    """Build the node tree from parser events; syntax and alias problems raise ConfigError."""
    stack: list[_Seq | _Map] = []
    anchors: dict[str, _Node] = {}
    open_anchors: dict[int, str] = {}
    root: _Node | None = None
    documents = 0

    def fail(line: int, message: str) -> ConfigError:
        return ConfigError([ConfigIssue("", line, message)], source)

    def add(node: _Node) -> None:
        nonlocal root
        if stack:
            stack[-1].children.append(node)
        else:
            root = node

    try:
        for ev in yaml.parse(text, Loader=_Parser):
            line = ev.start_mark.line + 1 if ev.start_mark is not None else 1
            if isinstance(ev, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise fail(line, "expected a single YAML document, found another '---'")
            elif isinstance(ev, yaml.ScalarEvent):
                node: _Node = _scalar(ev, line)
                if ev.anchor:
                    anchors[ev.anchor] = node
                add(node)
            elif isinstance(ev, yaml.AliasEvent):
                target = anchors.get(ev.anchor or "")
                if target is None:
                    raise fail(line, f"alias *{ev.anchor} refers to no anchor defined before it")
                if id(target) in open_anchors:
                    raise fail(line, f"alias *{ev.anchor} refers to a node that contains it")
                add(target)
            elif isinstance(ev, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                is_map = isinstance(ev, yaml.MappingStartEvent)
                expected = _TAG + ("map" if is_map else "seq")
                if ev.tag not in (None, "!", expected):
                    raise fail(line, f"unsupported YAML tag {ev.tag!r}")
                if len(stack) >= MAX_DEPTH:
                    raise fail(line, f"the document nests deeper than {MAX_DEPTH} levels")
                coll: _Seq | _Map = _Map(line) if is_map else _Seq(line)
                if ev.anchor:
                    anchors[ev.anchor] = coll
                    open_anchors[id(coll)] = ev.anchor
                add(coll)
                stack.append(coll)
            elif isinstance(ev, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                open_anchors.pop(id(stack.pop()), None)
    except yaml.YAMLError as e:
        raise ConfigError([_syntax_issue(e, text)], source) from None
    return root


# -- expansion to plain data ------------------------------------------------------------------

_REF = re.compile(r"\$\$\{|\$\{(?P<body>[^{}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute_env(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``${NAME}`` and ``${NAME:-default}`` in ``value``; ``$${`` is a literal ``${``.

    As in the shell, the default also applies when the variable is set but empty. Returns the
    new string and the problems found (unset variables, malformed references); substituted
    text is never rescanned, so a variable's value cannot inject further references.
    """
    problems: list[str] = []

    def repl(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$${":
            return "${"
        body = m.group("body")
        if body is None:
            problems.append("unterminated or nested '${' (write $${ for a literal '${')")
            return whole
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            problems.append(
                f"invalid variable reference {whole!r}: use ${{NAME}} or ${{NAME:-default}}"
            )
            return whole
        val = env.get(name)
        if val is None or (sep and val == ""):
            if sep:
                return default
            problems.append(
                f"environment variable {name!r} is not set (use ${{{name}:-default}} for a "
                "fallback, or $${ for a literal '${')"
            )
            return ""
        return val

    return _REF.sub(repl, value), problems


class _TooBig(Exception):
    pass


def _expanded_size(node: _Node, memo: dict[int, int]) -> int:
    """Node count after alias expansion, computed on the shared tree in linear time."""
    if isinstance(node, _Scalar):
        return 1
    known = memo.get(id(node))
    if known is None:
        known = 1
        for child in node.children:
            known += _expanded_size(child, memo)
            if known > MAX_NODES:
                break  # the exact figure no longer matters
        memo[id(node)] = known
    return known


class _Expander:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.lines: dict[Path, int] = {}
        self.issues: list[tuple[Path, int, str]] = []
        self.count = 0
        self._dup_checked: set[int] = set()

    def expand(self, node: _Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig
        if isinstance(node, _Scalar):
            if node.error:
                self.issues.append((path, node.line, node.error))
                return node.text
            if isinstance(node.value, str) and "$" in node.value:
                value, problems = substitute_env(node.value, self.env)
                for p in problems:
                    self.issues.append((path, node.line, p))
                return value
            return node.value
        if isinstance(node, _Seq):
            out: list[Any] = []
            for i, child in enumerate(node.children):
                self.lines[(*path, i)] = child.line
                out.append(self.expand(child, (*path, i)))
            return out
        return self._map(node, path, set())

    def _map(self, node: _Map, path: Path, skip: set[str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first: dict[str, int] = {}
        merges: list[tuple[_Node, int]] = []
        report_dups = id(node) not in self._dup_checked
        self._dup_checked.add(id(node))
        pairs = zip(node.children[::2], node.children[1::2], strict=True)
        for key_node, value_node in pairs:
            if not isinstance(key_node, _Scalar):
                self.issues.append((path, key_node.line, "mapping keys must be plain strings"))
                continue
            if key_node.merge:
                merges.append((value_node, key_node.line))
                continue
            key = key_node.text
            if key in first:
                if report_dups:
                    self.issues.append(
                        (
                            (*path, key),
                            key_node.line,
                            f"duplicate key {key!r} (first at line {first[key]})",
                        )
                    )
                continue
            first[key] = key_node.line
            if key in skip:
                continue
            self.lines[(*path, key)] = key_node.line
            result[key] = self.expand(value_node, (*path, key))
        # merged keys never override explicit ones, and earlier merge sources win over later
        for value_node, line in merges:
            sources = value_node.children if isinstance(value_node, _Seq) else [value_node]
            for src in sources:
                if not isinstance(src, _Map):
                    self.issues.append((path, line, "'<<' merges only mappings"))
                    continue
                taken = skip | set(result)
                result.update(self._map(src, path, taken))
        return result


@dataclass(frozen=True)
class YamlDocument:
    """The plain data of a config text.

    ``lines`` maps a path tuple (``("routes", 3, "match")``) to the 1-based line of its key or
    list item; ``issues`` lists problems that did not stop parsing (duplicate keys, unset
    variables, bad tags) as ``(path, line, message)``.
    """

    data: dict[str, Any]
    lines: dict[Path, int]
    issues: list[tuple[Path, int, str]]


def parse_yaml(text: str, source: str, env: Mapping[str, str]) -> YamlDocument:
    """Parse one config document; fatal problems (syntax, shape, size) raise ConfigError."""
    if len(text) > MAX_TEXT_BYTES:
        raise ConfigError(
            [ConfigIssue("", None, f"the config is larger than {MAX_TEXT_BYTES} bytes")], source
        )
    root = _compose(text, source)
    if root is None or (isinstance(root, _Scalar) and root.value is None):
        raise ConfigError([ConfigIssue("", 1, "the config is empty")], source)
    if not isinstance(root, _Map):
        msg = "the config must be a mapping of sections at the top level"
        raise ConfigError([ConfigIssue("", root.line, msg)], source)
    expander = _Expander(env)
    try:
        if _expanded_size(root, {}) > MAX_NODES:
            raise _TooBig
        data = expander.expand(root, ())
    except _TooBig:
        msg = f"the document expands to more than {MAX_NODES} nodes (alias bomb?)"
        raise ConfigError([ConfigIssue("", 1, msg)], source) from None
    expander.lines[()] = root.line
    return YamlDocument(data, expander.lines, expander.issues)
