"""OpenAPI 3.0 / 3.1 request contracts, compiled once per spec file.

:func:`load_openapi` reads the document (YAML or JSON), and compiles every operation: a path
regex (literal paths before templated ones, as OpenAPI requires), its parameters (path-level
merged with operation-level; local ``$ref``s resolved) and its JSON request body schemas.
Schemas are compiled with ``jsonschema-rs``: draft 2020-12 for 3.1, draft 4 for 3.0 (whose
``exclusiveMinimum: true`` form it uses) after turning ``nullable: true`` into a ``"null"``
type. ``#/components/...`` references resolve because each schema is compiled inside a copy
of the document's ``components``.

Parameters arrive as strings and are converted by their schema's type before validation
(integer, number, boolean; arrays: ``form``+explode query arguments repeat, other styles are
comma-separated). Not supported: cookie parameters, ``deepObject``/object parameters
(validated as strings), ``content``-typed parameters, and external ``$ref`` files.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from portway.plugins.request_validation.schema import SchemaError, Violation, compile_schema
from portway.plugins.request_validation.schema import violations as schema_violations

METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_INT: Final = re.compile(r"-?\d+")
_PARAM: Final = re.compile(r"\{([^{}/]+)\}")


class OpenApiError(ValueError):
    """The document cannot be used (a config error)."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path" | "query" | "header"
    required: bool
    validator: Any
    types: tuple[str, ...]
    item_types: tuple[str, ...]
    explode: bool
    style: str


@dataclass(frozen=True, slots=True)
class Body:
    required: bool
    #: declared media type (lower-case, may hold wildcards) -> compiled schema (None: any)
    media: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    names: tuple[str, ...]
    params: tuple[Param, ...]
    body: Body | None
    literal: bool


class OpenApiSpec:
    """The compiled operations of one document; :meth:`find` matches a request."""

    def __init__(self, source: str, ops: list[Operation]) -> None:
        self.source = source
        self.ops = ops

    def find(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, path params, whether the path exists for some method)."""
        m_lower = method.lower()
        path_known = False
        for op in self.ops:
            m = op.regex.fullmatch(path)
            if m is None:
                continue
            path_known = True
            if op.method == m_lower:
                return op, {n: unquote(v) for n, v in zip(op.names, m.groups(), strict=True)}, True
        return None, {}, path_known


def _resolve(doc: dict[str, Any], node: Any, seen: int = 0) -> Any:
    """Follow local ``$ref``s of a non-schema object (parameter, request body)."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if not ref.startswith("#/") or seen > 32:
            raise OpenApiError(f"unsupported $ref {ref!r} (only local #/... references)")
        target: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise OpenApiError(f"$ref {ref!r} does not resolve")
            target = target[part]
        node, seen = target, seen + 1
    return node


def _types(doc: dict[str, Any], schema: Any) -> tuple[str, ...]:
    try:
        schema = _resolve(doc, schema)
    except OpenApiError:
        return ()
    if not isinstance(schema, dict):
        return ()
    t = schema.get("type")
    if isinstance(t, str):
        return (t,)
    if isinstance(t, list):
        return tuple(x for x in t if isinstance(x, str))
    return ()


def _nullable_to_type(node: Any) -> None:
    """OpenAPI 3.0 ``nullable: true`` → a JSON Schema ``"null"`` type (in place)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if n.get("nullable") is True:
                t = n.get("type")
                if isinstance(t, str):
                    n["type"] = [t, "null"]
                if isinstance(n.get("enum"), list) and None not in n["enum"]:
                    n["enum"] = [*n["enum"], None]
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)


class _Compiler:
    def __init__(self, doc: dict[str, Any], draft: str, formats: bool) -> None:
        self.doc = doc
        self.draft = draft
        self.formats = formats
        comps = doc.get("components")
        self.components = comps if isinstance(comps, dict) else None

    def schema(self, schema: Any, where: str) -> Any:
        if isinstance(schema, dict) and self.components is not None and "components" not in schema:
            schema = {**schema, "components": self.components}
        try:
            return compile_schema(schema, self.draft, self.formats)
        except SchemaError as e:
            raise OpenApiError(f"{where}: {e}") from None

    def param(self, raw: Any, where: str) -> Param:
        p = _resolve(self.doc, raw)
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise OpenApiError(f"{where}: a parameter needs a name")
        loc = p.get("in")
        if loc not in ("path", "query", "header", "cookie"):
            raise OpenApiError(f"{where}: parameter {p['name']!r} has no valid `in`")
        schema = p.get("schema", {})
        items = _resolve(self.doc, schema).get("items", {}) if isinstance(schema, dict) else {}
        style = p.get("style") or ("form" if loc == "query" else "simple")
        return Param(
            name=p["name"] if loc != "header" else p["name"].lower(),
            where=loc,
            required=bool(p.get("required", loc == "path")),
            validator=self.schema(schema, f"{where} parameter {p['name']!r}"),
            types=_types(self.doc, schema),
            item_types=_types(self.doc, items),
            explode=bool(p.get("explode", style == "form")),
            style=style,
        )

    def body(self, raw: Any, where: str) -> Body | None:
        if raw is None:
            return None
        b = _resolve(self.doc, raw)
        content = b.get("content") if isinstance(b, dict) else None
        if not isinstance(content, dict):
            raise OpenApiError(f"{where}: requestBody needs `content`")
        media: list[tuple[str, Any]] = []
        for mt, obj in content.items():
            schema = obj.get("schema") if isinstance(obj, dict) else None
            validator = (
                self.schema(schema, f"{where} requestBody {mt}") if schema is not None else None
            )
            media.append((str(mt).lower(), validator))
        return Body(required=bool(b.get("required", False)), media=tuple(media))


def _bases(doc: dict[str, Any]) -> list[str]:
    out: set[str] = set()
    servers = doc.get("servers")
    for s in servers if isinstance(servers, list) else []:
        url = s.get("url") if isinstance(s, dict) else None
        if isinstance(url, str) and "{" not in url:
            out.add(urlsplit(url).path.rstrip("/"))
    return sorted(out or {""})


def compile_spec(doc: Any, source: str, formats: bool = False) -> OpenApiSpec:
    """Compile an already-parsed document."""
    if not isinstance(doc, dict):
        raise OpenApiError("an OpenAPI document is a mapping")
    version = str(doc.get("openapi", ""))
    if version.startswith("3.1"):
        draft = "2020-12"
    elif version.startswith("3.0"):
        draft = "4"
        doc = copy.deepcopy(doc)
        _nullable_to_type(doc)
    else:
        raise OpenApiError(f"`openapi: {version or '?'}`: only OpenAPI 3.0 and 3.1 are supported")
    paths = doc.get("paths")
    if not isinstance(paths, dict):
        raise OpenApiError("the document has no `paths` mapping")
    comp = _Compiler(doc, draft, formats)
    bases = _bases(doc)
    ops: list[Operation] = []
    for template, item in paths.items():
        if not isinstance(template, str) or not template.startswith("/"):
            raise OpenApiError(f"path {template!r} must start with '/'")
        item = _resolve(doc, item)
        if not isinstance(item, dict):
            continue
        names = tuple(_PARAM.findall(template))
        pattern = "".join(
            "([^/]+)" if i % 2 else re.escape(piece)
            for i, piece in enumerate(_PARAM.split(template))
        )
        alts = "|".join(re.escape(b) for b in bases)
        regex = re.compile(f"(?:{alts}){pattern}")
        shared = item.get("parameters") or []
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            where = f"{method.upper()} {template}"
            merged: dict[tuple[str, str], Param] = {}
            for raw in [*shared, *(op.get("parameters") or [])]:
                p = comp.param(raw, where)
                if p.where != "cookie":
                    merged[(p.where, p.name)] = p  # operation-level overrides path-level
            for n in names:
                if ("path", n) not in merged:
                    raise OpenApiError(f"{where}: path parameter {n!r} is not declared")
            ops.append(
                Operation(
                    method=method,
                    template=template,
                    regex=regex,
                    names=names,
                    params=tuple(merged.values()),
                    body=comp.body(op.get("requestBody"), where),
                    literal=not names,
                )
            )
    # literal paths win over templates; then fewer parameters, then longer literal text
    ops.sort(key=lambda o: (not o.literal, len(o.names), -len(_PARAM.sub("", o.template))))
    return OpenApiSpec(source, ops)


def load_openapi(path: str, formats: bool = False) -> OpenApiSpec:
    """Read and compile ``path`` (cached per file version)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise OpenApiError(f"cannot read OpenAPI file {path!r}: {e.strerror or e}") from None
    return _load(os.path.abspath(path), st.st_mtime_ns, st.st_size, formats)


@lru_cache(maxsize=32)
def _load(path: str, mtime: int, size: int, formats: bool) -> OpenApiSpec:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise OpenApiError(f"cannot read OpenAPI file {path!r}: {e}") from None
    except yaml.YAMLError as e:
        raise OpenApiError(f"OpenAPI file {path!r} is not valid YAML/JSON: {e}") from None
    return compile_spec(doc, path, formats)


# -- request checks ----------------------------------------------------------------------------


def _coerce(raw: str, types: tuple[str, ...]) -> Any:
    if "integer" in types and _INT.fullmatch(raw):
        return int(raw)
    if "number" in types:
        try:
            f = float(raw)
        except ValueError:
            pass
        else:
            if f == f and f not in (float("inf"), float("-inf")):
                return int(raw) if _INT.fullmatch(raw) else f
    if "boolean" in types and raw in ("true", "false"):
        return raw == "true"
    return raw


def _value(p: Param, raws: list[str]) -> Any:
    if "array" in p.types:
        if p.where == "query" and p.explode and p.style == "form":
            items = raws
        else:
            items = [x for r in raws for x in r.split(",")]
        return [_coerce(x, p.item_types) for x in items]
    return _coerce(raws[-1] if p.where == "query" else ",".join(raws), p.types)


def check_params(
    op: Operation, path_params: dict[str, str], query: bytes, headers: Any
) -> list[Violation]:
    """Violations of ``op``'s parameters by a request (``headers``: a ``Headers``)."""
    args: dict[str, list[str]] = {}
    if query:
        for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            args.setdefault(k, []).append(v)
    out: list[Violation] = []
    for p in op.params:
        if p.where == "path":
            raws = [path_params[p.name]] if p.name in path_params else []
        elif p.where == "query":
            raws = args.get(p.name, [])
        else:
            raws = headers.get_all(p.name)
        if not raws:
            if p.required:
                out.append(
                    {
                        "in": p.where,
                        "name": p.name,
                        "pointer": "",
                        "message": f"required {p.where} parameter {p.name!r} is missing",
                        "keyword": "required",
                    }
                )
            continue
        out.extend(schema_violations(p.validator, _value(p, raws), p.where, p.name))
    return out


def media_match(declared: str, actual: str) -> bool:
    if declared in ("*/*", actual):
        return True
    if declared.endswith("/*"):
        return actual.startswith(declared[:-1])
    return False


def body_schema_for(body: Body, media_type: str) -> tuple[bool, Any]:
    """(declared, validator) for a request's media type; exact declarations win over
    wildcards."""
    ranked = sorted(body.media, key=lambda m: ("*" in m[0], m[0].count("*")))
    for declared, validator in ranked:
        if media_match(declared, media_type):
            return True, validator
    return False, None
