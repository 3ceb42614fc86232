"""Response examples of an OpenAPI 3.x document, indexed by operation for ``mock``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml

_TEMPLATE = re.compile(r"\{[^{}/]+\}")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_MAX_REF_DEPTH = 32


@dataclass(frozen=True)
class MockAnswer:
    """What one operation answers: status, content type (None without a body) and body."""

    status: int
    content_type: str | None
    body: bytes


class OpenApiMocks:
    """Every operation of a spec with the example of its first 2xx response.

    ``find(method, path)`` matches the path against the spec's paths (templates such as
    ``/orders/{id}`` match one segment; literal paths win over templated ones, as OpenAPI
    asks), also with the path of the first ``servers`` URL stripped. The answer's body is the
    media type's ``example``, else its first ``examples`` value, else its schema's
    ``example``; ``application/json`` (or any ``+json`` type) is preferred. Local ``$ref``s
    are followed."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._spec = spec
        version = str(spec.get("openapi", ""))
        if not version.startswith("3."):
            raise ValueError(f"not an OpenAPI 3.x document (openapi: {version or 'missing'!r})")
        paths = spec.get("paths")
        if not isinstance(paths, dict):
            raise ValueError("the document has no `paths` mapping")
        self._prefix = ""
        servers = spec.get("servers")
        if isinstance(servers, list) and servers and isinstance(servers[0], dict):
            self._prefix = urlsplit(str(servers[0].get("url", ""))).path.rstrip("/")
        entries: list[tuple[int, re.Pattern[str], str, MockAnswer]] = []
        for template, item in paths.items():
            item = self._deref(item)
            if not isinstance(item, dict):
                continue
            rx = re.compile(
                "^"
                + "".join(
                    "[^/]+" if part.startswith("{") else re.escape(part)
                    for part in re.split(r"(\{[^{}/]+\})", str(template))
                    if part
                )
                + "$"
            )
            literal = 0 if _TEMPLATE.search(str(template)) else 1
            for method in _METHODS:
                op = item.get(method)
                if isinstance(op, dict):
                    entries.append((literal, rx, method.upper(), self._answer(op)))
        # literal paths first (OpenAPI: concrete paths match before templated ones)
        entries.sort(key=lambda e: -e[0])
        self._entries = [(rx, m, a) for _, rx, m, a in entries]

    def _deref(self, node: Any, depth: int = 0) -> Any:
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            if depth > _MAX_REF_DEPTH:
                raise ValueError("$ref chain too deep (a cycle?)")
            ref: str = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"only local $refs are supported, got {ref!r}")
            target: Any = self._spec
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise ValueError(f"unresolvable $ref {ref!r}")
                target = target[part]
            node = target
            depth += 1
        return node

    def _answer(self, op: dict[str, Any]) -> MockAnswer:
        responses = self._deref(op.get("responses"))
        if not isinstance(responses, dict):
            return MockAnswer(200, None, b"")
        codes = sorted(str(k) for k in responses)
        code = next((k for k in codes if k.startswith("2") and k.isdigit()), None)
        if code is None:
            code = next((k for k in codes if k.upper() == "2XX"), None)
        if code is None:
            return MockAnswer(501, "application/json", _no_example(op))
        status = int(code) if code.isdigit() else 200
        resp = self._deref(responses[code if code in responses else int(code)])
        content = resp.get("content") if isinstance(resp, dict) else None
        if not isinstance(content, dict) or not content:
            return MockAnswer(status, None, b"")
        types = list(content)
        mt = next((t for t in types if t == "application/json" or t.endswith("+json")), types[0])
        media = self._deref(content[mt]) or {}
        found, value = self._example(media)
        if not found:
            return MockAnswer(status, None, b"")
        if isinstance(value, str) and "json" not in mt:
            return MockAnswer(status, mt, value.encode())
        return MockAnswer(status, mt, orjson.dumps(value))

    def _example(self, media: dict[str, Any]) -> tuple[bool, Any]:
        if "example" in media:
            return True, media["example"]
        examples = media.get("examples")
        if isinstance(examples, dict) and examples:
            first = self._deref(next(iter(examples.values())))
            if isinstance(first, dict) and "value" in first:
                return True, first["value"]
        schema = self._deref(media.get("schema"))
        if isinstance(schema, dict) and "example" in schema:
            return True, schema["example"]
        return False, None

    def find(self, method: str, path: str) -> MockAnswer | None:
        candidates = [path]
        if self._prefix and path.startswith(self._prefix + "/"):
            candidates.append(path[len(self._prefix) :])
        for p in candidates:
            for rx, m, answer in self._entries:
                if (m == method or (method == "HEAD" and m == "GET")) and rx.match(p):
                    return answer
        return None


def _no_example(op: dict[str, Any]) -> bytes:
    name = op.get("operationId") or "this operation"
    return orjson.dumps({"error": f"{name} has no 2xx response to mock", "code": "no_example"})


def load_spec(path: str) -> OpenApiMocks:
    """Read and index ``path`` (YAML or JSON); ``ValueError`` with the reason when it cannot."""
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"cannot read OpenAPI file {path!r}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"OpenAPI file {path!r} is not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"OpenAPI file {path!r} is not a mapping")
    try:
        return OpenApiMocks(data)
    except ValueError as e:
        raise ValueError(f"OpenAPI file {path!r}: {e}") from None
