"""Descriptor sets and ``google.api.http`` rules, compiled once per config.

A descriptor set (``protoc --include_imports --descriptor_set_out``) is loaded into its own
``DescriptorPool``; message classes come from ``message_factory.GetMessageClass`` (no
hand-written codec). Each method of the configured services with a ``google.api.http``
option (and its ``additional_bindings``) becomes a :class:`Binding`: an HTTP method and a
path template compiled to a regular expression whose groups fill (nested) request fields.

Templates follow google/api/http.proto: ``/v1/{shelf.id}/books/{name=books/*}:verb``;
``*`` matches one segment, ``**`` the rest of the path. Without an annotation a method is
still reachable as ``POST /<package>.<Service>/<Method>`` with the whole body as the request.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError

_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")


class RulesError(ValueError):
    """A descriptor set or rule that cannot be used (reported at config load)."""


@dataclass(frozen=True)
class Binding:
    """One HTTP route to a gRPC method."""

    http_method: str
    template: str
    regex: re.Pattern[str]
    #: regex group name → request field path (``shelf.id``)
    fields: tuple[tuple[str, str], ...]
    #: ``""`` (no body), ``"*"`` (the whole request) or a top-level field name
    body: str
    method: MethodDescriptor
    #: ``/package.Service/Method``
    grpc_path: str


@dataclass
class Transcoder:
    """Bindings of the configured services; message classes by full name."""

    bindings: list[Binding]
    pool: descriptor_pool.DescriptorPool

    def message_class(self, desc: Descriptor) -> Any:
        return message_factory.GetMessageClass(desc)

    def match(self, http_method: str, path: str) -> tuple[Binding, dict[str, str]] | None:
        for b in self.bindings:
            if b.http_method != http_method:
                continue
            m = b.regex.fullmatch(path)
            if m is not None:
                return b, {fp: m.group(g) for g, fp in b.fields}
        return None


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[tuple[str, str], ...]]:
    """The regex of a path template and its group → field path pairs."""
    if not template.startswith("/"):
        raise RulesError(f"path template {template!r} must start with '/'")
    verb = ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.split(":", 1)[1]:
        template, verb = template.rsplit(":", 1)
    out: list[str] = []
    fields: list[tuple[str, str]] = []
    pos = 0
    for m in _VAR.finditer(template):
        out.append(_literal(template[pos : m.start()]))
        name = f"f{len(fields)}"
        fields.append((name, m.group(1)))
        out.append(f"(?P<{name}>{_segments(m.group(2) or '*')})")
        pos = m.end()
    out.append(_literal(template[pos:]))
    if verb:
        out.append(re.escape(":" + verb))
    try:
        return re.compile("".join(out)), tuple(fields)
    except re.error as e:
        raise RulesError(f"bad path template {template!r}: {e}") from None


def _literal(text: str) -> str:
    if "{" in text or "}" in text:
        raise RulesError(f"unbalanced braces in path template near {text!r}")
    return "/".join(_segments(s) if s in ("*", "**") else re.escape(s) for s in text.split("/"))


def _segments(pattern: str) -> str:
    parts = []
    for s in pattern.split("/"):
        if s == "*":
            parts.append("[^/]+")
        elif s == "**":
            parts.append(".+")
        else:
            parts.append(re.escape(s))
    return "/".join(parts)


def load_transcoder(path: str, services: list[str]) -> Transcoder:
    """Load ``path`` and compile the bindings of ``services``; :class:`RulesError` when the
    file is unreadable, not a descriptor set, or lacks a service. Cached by file identity."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise RulesError(f"cannot read descriptor set {path!r}: {e.strerror}") from None
    return _load(path, st.st_mtime_ns, st.st_size, tuple(services))


@functools.lru_cache(maxsize=32)
def _load(path: str, _mtime: int, _size: int, services: tuple[str, ...]) -> Transcoder:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RulesError(f"cannot read descriptor set {path!r}: {e.strerror}") from None
    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    except DecodeError:
        raise RulesError(f"{path!r} is not a FileDescriptorSet") from None
    if not fds.file:
        raise RulesError(f"{path!r} holds no file descriptors")
    pool = descriptor_pool.DescriptorPool()
    try:
        for fd in fds.file:
            pool.Add(fd)
    except Exception as e:  # protobuf raises TypeError/KeyError/... for a broken set
        raise RulesError(f"{path!r}: {e} (was it built with --include_imports?)") from None
    http_ext, opts_cls = _http_option(pool)
    bindings: list[Binding] = []
    for name in services:
        try:
            svc = pool.FindServiceByName(name)
        except KeyError:
            raise RulesError(f"service {name!r} is not in {path!r}") from None
        for m in svc.methods:
            if m.client_streaming:
                continue  # a JSON request is one message
            grpc_path = f"/{svc.full_name}/{m.name}"
            rules = []
            if http_ext is not None:
                opts = opts_cls.FromString(m.GetOptions().SerializeToString())
                if opts.HasExtension(http_ext):
                    rules = _flatten(opts.Extensions[http_ext])
            if not rules:
                bindings.append(
                    Binding(
                        "POST", grpc_path, re.compile(re.escape(grpc_path)), (), "*", m, grpc_path
                    )
                )
            for verb, template, body in rules:
                regex, fields = compile_template(template)
                for _, fp in fields:
                    _field_path(m.input_type, fp)
                if body not in ("", "*"):
                    _field_path(m.input_type, body)
                bindings.append(Binding(verb, template, regex, fields, body, m, grpc_path))
    return Transcoder(bindings, pool)


def _http_option(pool: descriptor_pool.DescriptorPool) -> tuple[Any, Any]:
    try:
        ext = pool.FindExtensionByName("google.api.http")
        opts = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("google.protobuf.MethodOptions")
        )
    except KeyError:
        return None, None
    return ext, opts


def _flatten(rule: Any) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        out.append((rule.custom.kind.upper(), rule.custom.path, rule.body))
    elif kind is not None:
        out.append((kind.upper(), getattr(rule, kind), rule.body))
    for extra in rule.additional_bindings:
        out.extend(_flatten(extra))
    return out


def _field_path(desc: Descriptor, path: str) -> FieldDescriptor:
    """The field at dotted ``path`` of ``desc``; RulesError when a segment is unknown."""
    fd: FieldDescriptor | None = None
    cur: Descriptor | None = desc
    for part in path.split("."):
        if cur is None or part not in cur.fields_by_name:
            raise RulesError(f"{desc.full_name} has no field {path!r}")
        fd = cur.fields_by_name[part]
        cur = fd.message_type
    assert fd is not None
    return fd


def field_at(desc: Descriptor, path: str) -> FieldDescriptor | None:
    try:
        return _field_path(desc, path)
    except RulesError:
        return None
