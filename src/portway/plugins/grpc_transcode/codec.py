"""JSON/HTTP ↔ protobuf messages for one :class:`Binding` (protobuf's ``json_format``)."""

from __future__ import annotations

import base64
import inspect
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from portway.errors import BadRequestError
from portway.plugins.grpc_transcode.config import PrintOptions
from portway.plugins.grpc_transcode.rules import Binding, Transcoder, field_at

#: protobuf ≥ 5.26 renamed ``including_default_value_fields``
_PRIMITIVES_KW = (
    "always_print_fields_with_no_presence"
    if "always_print_fields_with_no_presence"
    in inspect.signature(json_format.MessageToDict).parameters
    else "including_default_value_fields"
)


def print_kwargs(opts: PrintOptions) -> dict[str, Any]:
    return {
        _PRIMITIVES_KW: opts.always_print_primitive_fields,
        "preserving_proto_field_name": opts.preserving_proto_field_name,
        "use_integers_for_enums": opts.use_integers_for_enums,
    }


def request_message(
    tc: Transcoder,
    b: Binding,
    params: dict[str, str],
    query: bytes,
    body: bytes | None,
    ignore_unknown_query: bool,
) -> bytes:
    """The serialized request message: body (``*`` or a field), then path variables, then
    query parameters (for fields bound by neither). 400 on anything that does not fit."""
    desc: Descriptor = b.method.input_type
    data: dict[str, Any] = {}
    if b.body and body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise BadRequestError(f"request body is not JSON: {e}") from None
        if b.body == "*":
            if not isinstance(parsed, dict):
                raise BadRequestError("request body must be a JSON object")
            data = parsed
        else:
            data[b.body] = parsed
    bound = set(params)
    for path, raw in params.items():
        fd = field_at(desc, path)
        assert fd is not None  # checked when the rules were compiled
        # a ``**`` variable keeps its slashes; other percent-escapes are decoded
        _put(data, path, _scalar(fd, unquote(raw)), repeated=False)
    if b.body != "*" and query:
        for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if key in bound or (b.body and (key == b.body or key.startswith(b.body + "."))):
                continue
            fd = field_at(desc, key)
            if fd is None:
                if ignore_unknown_query:
                    continue
                raise BadRequestError(f"unknown query parameter {key!r}")
            if fd.type == FieldDescriptor.TYPE_MESSAGE and not _is_wkt_scalar(fd):
                raise BadRequestError(f"query parameter {key!r} names a message field")
            _put(data, key, _scalar(fd, value), repeated=_is_repeated(fd))
    msg = tc.message_class(desc)()
    try:
        json_format.ParseDict(data, msg, descriptor_pool=tc.pool)
    except json_format.ParseError as e:
        raise BadRequestError(f"invalid request: {e}") from None
    out: bytes = msg.SerializeToString()
    return out


def response_json(tc: Transcoder, b: Binding, message: bytes, opts: PrintOptions) -> bytes:
    cls = tc.message_class(b.method.output_type)
    msg = cls.FromString(message)
    d = json_format.MessageToDict(msg, descriptor_pool=tc.pool, **print_kwargs(opts))
    return orjson.dumps(d)


def error_json(tc: Transcoder, code: int, message: str, details_bin: bytes | None) -> bytes:
    """``{"code", "message", "details"}`` (google.rpc.Status as JSON); details are decoded
    from ``grpc-status-details-bin`` when the descriptor set knows google.rpc.Status."""
    details: list[Any] = []
    if details_bin:
        try:
            raw = base64.b64decode(details_bin + b"=" * (-len(details_bin) % 4))
            cls = tc.message_class(tc.pool.FindMessageTypeByName("google.rpc.Status"))
            st = json_format.MessageToDict(cls.FromString(raw), descriptor_pool=tc.pool)
            details = list(st.get("details", []))
        except Exception:  # unknown types in Any, no google.rpc in the set: leave them out
            details = []
    return orjson.dumps({"code": code, "message": message, "details": details})


def _is_repeated(fd: FieldDescriptor) -> bool:
    # ``is_repeated`` (protobuf ≥ 6) replaces ``label``
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return bool(getattr(fd, "label", 0) == FieldDescriptor.LABEL_REPEATED)


def _is_wkt_scalar(fd: FieldDescriptor) -> bool:
    mt = fd.message_type
    return mt is not None and mt.full_name.startswith("google.protobuf.")


def _scalar(fd: FieldDescriptor, value: str) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_BOOL:
        if value in ("true", "1"):
            return True
        if value in ("false", "0", ""):
            return False
        raise BadRequestError(f"field {fd.name!r}: {value!r} is not a boolean")
    if t == FieldDescriptor.TYPE_ENUM and value.lstrip("-").isdigit():
        return int(value)
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        try:
            return float(value)
        except ValueError:
            raise BadRequestError(f"field {fd.name!r}: {value!r} is not a number") from None
    return value  # integers as strings (proto3 JSON accepts them), strings, bytes, WKTs


def _put(data: dict[str, Any], path: str, value: Any, repeated: bool) -> None:
    parts = path.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    leaf = parts[-1]
    if repeated:
        cur.setdefault(leaf, []).append(value)
    else:
        cur[leaf] = value
