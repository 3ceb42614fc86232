"""Round-tripping config *source* text for admin edits.

Consumer edits must keep ``${ENV}`` references and ``$${`` escapes exactly as written, so they
work on the source text rather than on the effective config. PyYAML's ``safe_load`` follows
YAML 1.1 (``on``/``yes`` become booleans, ``retries: {on: [...]}`` would turn into
``{True: [...]}``); this loader resolves booleans and timestamps as YAML 1.2 does, like the
config loader. Aliases are expanded on dump so the written file has no anchors.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from portway.errors import BadRequestError, GatewayError


class NotAMappingError(GatewayError):
    """A well-formed YAML document whose top level is not a mapping."""

    status = 422
    code = "invalid_config"


class _SourceLoader(yaml.SafeLoader):
    pass


_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_SourceLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SourceLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _SourceDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def load_source(text: str) -> dict[str, Any]:
    """Plain data of a config text (``${…}`` left as written); 400 on YAML syntax errors."""
    try:
        data = yaml.load(text, Loader=_SourceLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise BadRequestError(f"invalid YAML{where}: {problem}", code="invalid_yaml") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NotAMappingError("the config must be a mapping at the top level")
    return data


def dump_source(data: Any) -> str:
    """YAML text of plain data, keys in insertion order."""
    return yaml.dump(
        data,
        Dumper=_SourceDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )
