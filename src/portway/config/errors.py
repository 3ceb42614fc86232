"""Config errors that read well: a path into the document, the YAML line and a plain message.

:class:`ConfigError` carries every :class:`ConfigIssue` found in one pass, so a user fixes a
config in one round trip. :func:`issues_from_validation` turns pydantic's ``ValidationError``
into issues with human wording (``required``, ``unknown key 'x'; did you mean 'y'?``, ``must be
an integer (got 'abc')``) instead of pydantic's internal message format.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

PathPart = str | int
Path = tuple[PathPart, ...]

_IDENT = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(path: Sequence[PathPart]) -> str:
    """``("routes", 3, "match", "paths", 0)`` → ``routes[3].match.paths[0]``.

    Keys that are not plain identifiers are quoted (``upstreams["a.b"]``) so the path stays
    unambiguous.
    """
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config document.

    ``path`` is the dotted/indexed location (``routes[3].match.paths[0]``; empty for problems of
    the document as a whole, such as YAML syntax errors); ``line`` is the 1-based line of the
    offending node, or of its nearest existing parent when the key is missing; ``column`` is
    only set for syntax errors.
    """

    path: str
    line: int | None
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column}")
        loc = ", ".join(where)
        if self.path:
            return f"{self.path} ({loc}): {self.message}" if loc else f"{self.path}: {self.message}"
        return f"{loc}: {self.message}" if loc else self.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
        }


class ConfigError(Exception):
    """A config was rejected; ``errors`` lists every issue found, ordered by line."""

    def __init__(self, errors: list[ConfigIssue], source: str = "<string>") -> None:
        self.errors = errors
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"{self.source}: {n} error{'s' if n != 1 else ''}"
        return head + "".join(f"\n  {e}" for e in self.errors)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the admin API."""
        return {"source": self.source, "errors": [e.to_dict() for e in self.errors]}


# -- navigating the schema along an error location --------------------------------------------


def _unwrap(tp: Any) -> list[Any]:
    """The concrete alternatives of an annotation (Annotated and Optional removed)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for a in get_args(tp):
            if a is not type(None):
                out.extend(_unwrap(a))
        return out
    return [tp]


def descend(tp: Any, key: PathPart) -> Any | None:
    """The annotation found one step below ``tp`` at ``key``, or None when it can't be told."""
    for alt in _unwrap(tp):
        origin = get_origin(alt)
        if isinstance(alt, type) and issubclass(alt, BaseModel) and isinstance(key, str):
            field = alt.model_fields.get(key)
            if field is None:
                for f in alt.model_fields.values():
                    if f.alias == key:
                        field = f
            if field is not None:
                return field.annotation
        elif origin in (list, tuple, set, frozenset, Sequence) and isinstance(key, int):
            args = get_args(alt)
            return args[0] if args else Any
        elif origin in (dict, Mapping) and isinstance(key, str):
            args = get_args(alt)
            return args[1] if len(args) == 2 else Any
    return None


def model_at(root: type[BaseModel], loc: Sequence[PathPart]) -> type[BaseModel] | None:
    """The pydantic model class that validates the node at ``loc`` under ``root``."""
    tp: Any = root
    for key in loc:
        tp = descend(tp, key)
        if tp is None:
            return None
    for alt in _unwrap(tp):
        if isinstance(alt, type) and issubclass(alt, BaseModel):
            return alt
    return None


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt ``word``, if one is close enough."""
    import difflib  # only a config with an error needs it

    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def model_keys(model: type[BaseModel]) -> list[str]:
    keys = list(model.model_fields)
    keys += [f.alias for f in model.model_fields.values() if f.alias]
    return keys


# -- wording -----------------------------------------------------------------------------------


def describe(value: Any) -> str:
    """A short, plain rendering of a YAML value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_WORDS = {
    "string_type": "a string",
    "string_unicode": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def humanize(err: Mapping[str, Any]) -> str:
    """Plain wording for one pydantic error (``extra_forbidden`` is handled by the caller)."""
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return "required"
    if kind in _TYPE_WORDS:
        msg = f"must be {_TYPE_WORDS[kind]} (got {describe(value)})"
        if kind == "string_type" and isinstance(value, int | float | bool):
            msg += "; quote it to make it a string"
        return msg
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?')} (got {describe(value)})"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("greater than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {ctx.get(key)} (got {describe(value)})"
    if kind in ("too_short", "string_too_short"):
        unit = "item" if kind == "too_short" else "character"
        n = ctx.get("min_length")
        return f"must have at least {n} {unit}{'s' if n != 1 else ''}"
    if kind in ("too_long", "string_too_long"):
        unit = "item" if kind == "too_long" else "character"
        n = ctx.get("max_length")
        return f"must have at most {n} {unit}{'s' if n != 1 else ''}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')!r} (got {describe(value)})"
    msg = str(err.get("msg", "invalid value"))
    msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    return msg.replace("Input should be", "must be")


# -- ValidationError → issues -----------------------------------------------------------------


def issues_from_validation(
    exc: ValidationError,
    root: type[BaseModel],
    data: Any,
    emit: Callable[[Path, str], None],
) -> None:
    """Call ``emit(loc, message)`` for every error in ``exc`` from validating ``data`` as ``root``.

    Locations are relative to ``data``. Errors a list-wide field validator raised at the list
    itself are narrowed to the failing items (``match.paths[2]``) by re-validating the items one
    by one, so every bad item is reported, not only the first.
    """
    for err in exc.errors():
        loc: Path = tuple(p for p in err["loc"] if p != "[key]")
        kind = err["type"]
        if kind == "extra_forbidden":
            key = loc[-1] if loc else "?"
            msg = f"unknown key {str(key)!r}"
            model = model_at(root, loc[:-1])
            if model is not None and isinstance(key, str):
                close = suggest(key, model_keys(model))
                if close:
                    msg += f"; did you mean {close!r}?"
            emit(loc, msg)
            continue
        if kind in ("value_error", "assertion_error") and loc:
            narrowed = _narrow(root, data, loc)
            if narrowed:
                for sub, m in narrowed:
                    emit(sub, m)
                continue
        emit(loc, humanize(err))


def _lookup(data: Any, loc: Path) -> Any:
    for key in loc:
        in_list = isinstance(key, int) and isinstance(data, list) and 0 <= key < len(data)
        in_map = isinstance(key, str) and isinstance(data, dict) and key in data
        if not (in_list or in_map):
            return None
        data = data[key]
    return data


def _narrow(root: type[BaseModel], data: Any, loc: Path) -> list[tuple[Path, str]]:
    """Per-item errors for a field validator that rejected a whole list or mapping."""
    value = _lookup(data, loc)
    model = model_at(root, loc[:-1])
    field = loc[-1]
    if model is None or not isinstance(field, str) or not isinstance(value, list | dict):
        return []
    items: Iterable[tuple[PathPart, Any]] = (
        enumerate(value) if isinstance(value, list) else value.items()
    )
    found: list[tuple[Path, str]] = []
    for key, item in items:
        probe: Any = [item] if isinstance(value, list) else {key: item}
        try:
            model.model_validate({field: probe})
        except ValidationError as e:
            for sub in e.errors():
                if tuple(sub["loc"]) == (field,) and sub["type"] in (
                    "value_error",
                    "assertion_error",
                ):
                    found.append(((*loc, key), humanize(sub)))
        except Exception:  # a probe must never turn a config error into a crash
            continue
    return found
