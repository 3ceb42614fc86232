"""JSON Schema compilation (``jsonschema-rs``) and violation reports.

Validators are compiled once per distinct (schema, draft, formats) and cached, so the load
check and the runtime build share one compile. A violation is reported as
``{"in", "pointer", "message", "keyword"}`` (plus ``"name"`` for a parameter), ``pointer``
being the RFC 6901 JSON pointer of the offending value inside what was validated.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

import jsonschema_rs
import orjson

#: drafts by name: OpenAPI 3.0 schemas follow draft 4's exclusiveMinimum/Maximum form
DRAFTS: Final[dict[str, Any]] = {
    "2020-12": jsonschema_rs.Draft202012Validator,
    "4": jsonschema_rs.Draft4Validator,
}

Violation = dict[str, Any]


class SchemaError(ValueError):
    """A schema that does not compile (a config error)."""


def check_schema(schema: Any, draft: str = "2020-12") -> None:
    """Raise :class:`SchemaError` unless ``schema`` is valid against its meta-schema."""
    if not isinstance(schema, dict | bool):
        raise SchemaError(f"a JSON Schema is an object or a boolean, not {type(schema).__name__}")
    if draft == "2020-12" and not isinstance(schema, bool):
        try:
            jsonschema_rs.meta.validate(schema)
        except jsonschema_rs.ValidationError as e:
            at = _pointer(e.instance_path) or "/"
            raise SchemaError(f"invalid JSON Schema at {at}: {e.message}") from None


def compile_schema(schema: Any, draft: str = "2020-12", formats: bool = False) -> Any:
    """A compiled validator for ``schema``; raise :class:`SchemaError` when it is invalid."""
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
    return _compile(key, draft, formats)


@lru_cache(maxsize=256)
def _compile(key: str, draft: str, formats: bool) -> Any:
    schema = orjson.loads(key)
    check_schema(schema, draft)
    try:
        return DRAFTS[draft](schema, validate_formats=formats)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as e:
        msg = getattr(e, "message", None) or str(e).splitlines()[0]
        raise SchemaError(f"invalid JSON Schema: {msg}") from None


def _escape(part: Any) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def _pointer(path: Any) -> str:
    return "".join("/" + _escape(p) for p in path)


def violations(
    validator: Any, instance: Any, where: str, name: str | None = None
) -> list[Violation]:
    """Every violation of ``instance`` (none: ``[]``)."""
    out: list[Violation] = []
    for e in validator.iter_errors(instance):
        sp = list(e.schema_path)
        v: Violation = {
            "in": where,
            "pointer": _pointer(e.instance_path),
            "message": e.message,
            "keyword": str(sp[-1]) if sp else "",
        }
        if name is not None:
            v["name"] = name
        out.append(v)
    return out


def depth_exceeds(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests containers deeper than ``limit`` (iterative: never recurses)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, d = stack.pop()
        if d > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node if isinstance(v, dict | list))
    return False
