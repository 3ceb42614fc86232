"""SOAP envelopes: templates filled with escaped JSON values, responses parsed safely.

Parsing uses ``defusedxml`` with DTDs forbidden (and so entity declarations and external
entities): an XXE or billion-laughs document is refused, never expanded.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*\}\}")
ENVELOPE_NS = {
    "1.1": "http://schemas.xmlsoap.org/soap/envelope/",
    "1.2": "http://www.w3.org/2003/05/soap-envelope",
}
_QUOTES = {'"': "&quot;", "'": "&apos;"}


class TemplateError(ValueError):
    """The request template is unreadable or not well-formed XML."""


class SoapParseError(ValueError):
    """The upstream's answer is not a usable SOAP envelope."""


def parse(data: bytes | str) -> Element:
    """Parse XML with DTDs, entities and external references refused."""
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True)
    except (DefusedXmlException, SafeET.ParseError) as e:
        raise SoapParseError(f"unusable XML: {e}") from None


def load_template(path: str, version: str) -> tuple[str, tuple[str, ...]]:
    """The template text (wrapped in an Envelope when it has none) and its field paths."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"cannot read request_template {path!r}: {e}") from None
    text = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", text)
    fields = tuple(dict.fromkeys(m.group(1) for m in _PLACEHOLDER.finditer(text)))
    try:
        root = parse(_PLACEHOLDER.sub("x", text))
    except SoapParseError as e:
        raise TemplateError(f"request_template {path!r}: {e}") from None
    if _local(root.tag) != "Envelope":
        ns = ENVELOPE_NS[version]
        text = f'<soap:Envelope xmlns:soap="{ns}"><soap:Body>{text}</soap:Body></soap:Envelope>'
    return text, fields


def fill(template: str, data: dict[str, Any]) -> str:
    """The template with each ``{{path}}`` replaced by the XML-escaped JSON value; a missing
    field raises ``KeyError(path)``."""

    def value(m: re.Match[str]) -> str:
        cur: Any = data
        for part in m.group(1).split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise KeyError(m.group(1))
            cur = cur[part]
        if isinstance(cur, bool):
            s = "true" if cur else "false"
        elif cur is None:
            s = ""
        elif isinstance(cur, (dict, list)):
            raise TypeError(m.group(1))
        else:
            s = str(cur)
        return escape(s, _QUOTES)

    return _PLACEHOLDER.sub(value, template)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def to_json(el: Element) -> Any:
    """An element as JSON: text for a leaf, else an object of children by local name
    (repeated names become lists)."""
    children = list(el)
    if not children:
        return el.text or ""
    out: dict[str, Any] = {}
    for c in children:
        k = _local(c.tag)
        v = to_json(c)
        if k in out:
            prev = out[k]
            if isinstance(prev, list):
                prev.append(v)
            else:
                out[k] = [prev, v]
        else:
            out[k] = v
    return out


def read_envelope(data: bytes) -> tuple[bool, Any]:
    """``(is_fault, json)`` of a SOAP response: the Body's content, or the Fault as
    ``{"code", "message", "detail"}`` (SOAP 1.1 and 1.2 field names alike)."""
    root = parse(data)
    if _local(root.tag) != "Envelope":
        raise SoapParseError("not a SOAP Envelope")
    body = next((c for c in root if _local(c.tag) == "Body"), None)
    if body is None:
        raise SoapParseError("SOAP Envelope without a Body")
    items = list(body)
    fault = next((c for c in items if _local(c.tag) == "Fault"), None)
    if fault is not None:
        f = {_local(c.tag): c for c in fault}
        code = f.get("faultcode")
        msg = f.get("faultstring")
        detail = f.get("detail") if "detail" in f else f.get("Detail")
        if code is None and "Code" in f:  # SOAP 1.2: Code/Value, Reason/Text
            code = next((c for c in f["Code"] if _local(c.tag) == "Value"), None)
        if msg is None and "Reason" in f:
            msg = next((c for c in f["Reason"] if _local(c.tag) == "Text"), None)
        return True, {
            "code": (code.text or "").strip() if code is not None else "",
            "message": (msg.text or "").strip() if msg is not None else "",
            "detail": to_json(detail) if detail is not None else None,
        }
    if not items:
        return False, {}
    if len(items) == 1:
        return False, {_local(items[0].tag): to_json(items[0])}
    return False, to_json(body)
