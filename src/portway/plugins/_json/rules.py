"""The ``json: {remove, rename, set}`` block shared by the transformer plugins."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import Field, PrivateAttr, field_validator

from portway.pipeline.plugin import PluginConfig
from portway.plugins._json import paths
from portway.plugins._json.paths import JsonPath


def _is_path(text: str) -> bool:
    return "." in text or "[" in text


class JsonRules(PluginConfig):
    """Edits to a JSON body, applied in this order: remove, rename, set (Kong's order).

    Paths are dotted with ``[*]``/``[N]`` selectors (``items[*].secret``). A rename target
    that is a bare key renames in place (``items[*].id -> itemId``); a target that is itself a
    path moves the value (the source may then not contain ``[*]``).
    """

    remove: list[str] = Field(default_factory=list, description="paths to delete")
    rename: dict[str, str] = Field(default_factory=dict, description="path -> new key or path")
    set: dict[str, Any] = Field(
        default_factory=dict, description="path -> JSON value (created when missing)"
    )

    _remove: list[JsonPath] = PrivateAttr(default_factory=list)
    _rename: list[tuple[JsonPath, str | JsonPath]] = PrivateAttr(default_factory=list)
    _set: list[tuple[JsonPath, Any]] = PrivateAttr(default_factory=list)

    @field_validator("remove")
    @classmethod
    def _check_remove(cls, v: list[str]) -> list[str]:
        for p in v:
            paths.parse(p)
        return v

    @field_validator("rename")
    @classmethod
    def _check_rename(cls, v: dict[str, str]) -> dict[str, str]:
        for src, dst in v.items():
            sp = paths.parse(src)
            if _is_path(dst):
                paths.parse(dst)
                if sp.wildcard:
                    raise ValueError(
                        f"rename {src!r} -> {dst!r}: moving to another path needs a source "
                        "without [*] (rename to a bare key to rename in every element)"
                    )
            elif sp.last_key is None:
                raise ValueError(f"rename {src!r}: the path must end with an object key")
        return v

    @field_validator("set")
    @classmethod
    def _check_set(cls, v: dict[str, Any]) -> dict[str, Any]:
        for p, value in v.items():
            paths.parse(p)
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise ValueError(f"set {p!r}: {value!r} is not a JSON value") from None
        return v

    def model_post_init(self, context: Any, /) -> None:
        self._remove = [paths.parse(p) for p in self.remove]
        self._rename = [
            (paths.parse(s), paths.parse(d) if _is_path(d) else d) for s, d in self.rename.items()
        ]
        self._set = [(paths.parse(p), v) for p, v in self.set.items()]

    @property
    def empty(self) -> bool:
        return not (self.remove or self.rename or self.set)

    def apply(self, doc: Any, render: Callable[[str], str] | None = None) -> int:
        """Edit ``doc`` in place; string values of ``set`` go through ``render`` (templates)
        when given. Returns how many places were touched."""
        n = 0
        for p in self._remove:
            n += paths.remove(doc, p)
        for src, dst in self._rename:
            n += (
                paths.move(doc, src, dst)
                if isinstance(dst, JsonPath)
                else paths.rename(doc, src, dst)
            )
        for p, value in self._set:
            if render is not None and isinstance(value, str):
                value = render(value)
            n += paths.set_value(doc, p, value)
        return n
