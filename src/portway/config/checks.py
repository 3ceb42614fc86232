"""Cross-document checks of a parsed config: what one model's validator cannot see.

These run on the plain data (not the validated models) so that they report even when schema
validation failed elsewhere: listener/admin address clashes, TLS files, route names and
upstream references, aggregates, profiles, protocol mismatches, rewrite parameters and
duplicate consumers. Each problem goes to ``report(path, message)``; nothing here raises.
Plugin bindings are checked by :mod:`portway.config.loader`, which owns the plugin registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from portway.config.errors import Path, suggest
from portway.config.traffic import referenced_upstreams

if TYPE_CHECKING:
    from portway.config.aggregate import Template
    from portway.config.jsonpath import JsonPath

__all__ = ["Report", "check_document"]

Report = Callable[[Path, str], None]
"""Receives each problem: the path of the offending node and a user-facing message."""


def check_document(data: dict[str, Any], report: Report, *, check_files: bool) -> set[str]:
    """Run every cross-document check on ``data``; return the names of the valid profiles.

    ``check_files=False`` skips reading the certificate files the config names."""
    _check_routes(data, report)
    _check_consumers(data, report)
    profiles = _check_profiles(data, report)
    _check_addresses(data, report)
    if check_files:
        _check_tls_files(data, report)
    else:
        _check_client_ca_needed(data, report)
    return profiles


def _as_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    try:
        return bool(TypeAdapter(bool).validate_python(value))
    except ValidationError:
        return default


def _split_addr(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]").lower(), int(port)


_WILDCARDS = {"", "*", "0.0.0.0", "::"}
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|::1)$")


def _check_addresses(data: dict[str, Any], report: Report) -> None:
    listeners = data.get("listeners")
    seen: list[tuple[str, int, Path, str]] = []
    if listeners is None:
        seen.append(("127.0.0.1", 8080, ("listeners",), "the default listener"))
    elif isinstance(listeners, list):
        for i, lst in enumerate(listeners):
            addr = lst.get("address", "127.0.0.1:8080") if isinstance(lst, dict) else None
            if isinstance(addr, str) and (hp := _split_addr(addr)):
                seen.append((*hp, ("listeners", i, "address"), f"listeners[{i}]"))
    admin = data.get("admin", {})
    if isinstance(admin, dict) and _as_bool(admin.get("enabled"), True):
        addr = admin.get("address", "127.0.0.1:9901")
        if isinstance(addr, str) and (hp := _split_addr(addr)):
            seen.append((*hp, ("admin", "address"), "admin"))
            if not _as_bool(admin.get("auth"), True) and not _LOOPBACK.match(hp[0]):
                report(
                    ("admin", "auth"),
                    "auth may be false only when admin.address is a loopback address",
                )
    for j, (host, port, path, _) in enumerate(seen):
        if port == 0:
            continue  # port 0 asks the OS for a fresh port: never a clash
        for other_host, other_port, _, who in seen[:j]:
            if port == other_port and (
                host == other_host or host in _WILDCARDS or other_host in _WILDCARDS
            ):
                report(path, f"address {host}:{port} is already used by {who}")
                break


def _check_client_ca_needed(data: dict[str, Any], report: Report) -> None:
    listeners = data.get("listeners")
    for i, lst in enumerate(listeners if isinstance(listeners, list) else []):
        tls = lst.get("tls") if isinstance(lst, dict) else None
        if not isinstance(tls, dict):
            continue
        mode = tls.get("client_cert", "none")
        if mode in ("optional", "required") and not tls.get("client_ca"):
            report(
                ("listeners", i, "tls", "client_cert"),
                f"client_cert: {mode} needs client_ca (the CA bundle that verifies clients)",
            )


def _has_tls(data: dict[str, Any]) -> bool:
    """Whether a listener or an upstream has a ``tls:`` section."""
    listeners = data.get("listeners")
    upstreams = data.get("upstreams")
    sections = [
        *(listeners if isinstance(listeners, list) else []),
        *(upstreams.values() if isinstance(upstreams, dict) else []),
    ]
    return any(isinstance(s, dict) and isinstance(s.get("tls"), dict) for s in sections)


def _check_tls_files(data: dict[str, Any], report: Report) -> None:
    """Certificates and CA bundles named by listeners and upstreams must be usable."""
    _check_client_ca_needed(data, report)
    if not _has_tls(data):
        return  # cryptography (~8 MB of a worker's RSS) is imported only for TLS configs
    from portway.config.certs import CertificateError, check_ca_bundle, inspect_pair

    listeners = data.get("listeners")
    for i, lst in enumerate(listeners if isinstance(listeners, list) else []):
        tls = lst.get("tls") if isinstance(lst, dict) else None
        if not isinstance(tls, dict):
            continue
        base: Path = ("listeners", i, "tls")
        pairs: list[tuple[Path, Any, Any]] = []
        if "cert" in tls or "key" in tls:  # the single-certificate form of earlier releases
            pairs.append(((*base, "cert"), tls.get("cert"), tls.get("key")))
        certs = tls.get("certificates")
        for j, c in enumerate(certs if isinstance(certs, list) else []):
            if isinstance(c, dict):
                pairs.append(((*base, "certificates", j), c.get("cert"), c.get("key")))
        for where, cert, key in pairs:
            if isinstance(cert, str) and isinstance(key, str):
                try:
                    inspect_pair(cert, key)
                except CertificateError as e:
                    report(where, str(e))
        ca = tls.get("client_ca")
        if isinstance(ca, str):
            try:
                check_ca_bundle(ca)
            except CertificateError as e:
                report((*base, "client_ca"), str(e))
    upstreams = data.get("upstreams")
    for name, up in (upstreams if isinstance(upstreams, dict) else {}).items():
        tls = up.get("tls") if isinstance(up, dict) else None
        if not isinstance(tls, dict):
            continue
        base = ("upstreams", name, "tls")
        if isinstance(tls.get("ca"), str):
            try:
                check_ca_bundle(tls["ca"])
            except CertificateError as e:
                report((*base, "ca"), str(e))
        cert, key = tls.get("client_cert"), tls.get("client_key")
        if isinstance(cert, str) and isinstance(key, str):
            try:
                inspect_pair(cert, key)
            except CertificateError as e:
                report((*base, "client_cert"), str(e))


def _check_routes(data: dict[str, Any], report: Report) -> None:
    routes = data.get("routes")
    upstreams = data.get("upstreams")
    names = set(upstreams) if isinstance(upstreams, dict) else set()
    global_termination = _answers_all(data.get("plugins"))
    if not isinstance(routes, list):
        return
    first: dict[str, int] = {}
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        name = route.get("name")
        if isinstance(name, str):
            if name in first:
                report(
                    (("routes", i, "name")),
                    f"duplicate route name {name!r} (first is routes[{first[name]}])",
                )
            else:
                first[name] = i
        _check_rewrite(route, i, report)
        up = route.get("upstream")
        traffic = referenced_upstreams(route)
        for sub, ref in traffic:
            if ref not in names:
                report(("routes", i, *sub), _unknown_upstream(ref, names))
        _check_protocols(route, i, up, traffic, upstreams, report)
        if isinstance(up, str):
            if up not in names:
                report(("routes", i, "upstream"), _unknown_upstream(up, names))
        elif (
            up is None
            and route.get("aggregate") is None
            and not (global_termination or _answers_all(route.get("plugins")))
        ):
            report(
                ("routes", i, "upstream"),
                "route needs an upstream or an aggregate (only routes bound to "
                "request_termination, mock or redirect with `to` may omit both)",
            )
        agg = route.get("aggregate")
        if agg is not None and up is not None:
            report(
                ("routes", i, "aggregate"),
                "a route has either `upstream` or `aggregate`, not both",
            )
        if isinstance(agg, dict):  # (another type is reported by the schema)
            _check_aggregate(agg, ("routes", i, "aggregate"), names, report)


def _check_aggregate(agg: dict[str, Any], base: Path, upstreams: set[str], report: Report) -> None:
    """Call upstreams exist, path templates parse, references form no cycle, field paths parse."""
    # imported for configs that have aggregate routes only (as the runtime does)
    from portway.config.aggregate import TemplateError, parse_template, plan_order

    calls = agg.get("calls")
    if not isinstance(calls, list):
        return
    names: list[str] = []
    templates: list[Template] = []
    ok = True
    for j, call in enumerate(calls):
        if not isinstance(call, dict):
            ok = False
            continue
        where = (*base, "calls", j)
        up = call.get("upstream")
        if isinstance(up, str) and up not in upstreams:
            close = suggest(up, upstreams)
            hint = f"; did you mean {close!r}?" if close else ""
            report((*where, "upstream"), f"unknown upstream {up!r}{hint}")
        name, path = call.get("name"), call.get("path")
        if not isinstance(name, str) or not isinstance(path, str):
            ok = False
            continue
        try:
            templates.append(parse_template(path))
            names.append(name)
        except TemplateError as e:
            report((*where, "path"), str(e))
            ok = False
        for key in ("target",):
            if isinstance(call.get(key), str):
                _check_json_path(call[key], (*where, key), report)
        fields = call.get("fields")
        if isinstance(fields, dict):
            for key in ("allow", "deny"):
                lst = fields.get(key)
                if isinstance(lst, list):
                    for k, text in enumerate(lst):
                        if isinstance(text, str):
                            _check_json_path(text, (*where, "fields", key, k), report)
            ren = fields.get("rename")
            if isinstance(ren, dict):
                for src, dst in ren.items():
                    if isinstance(src, str):
                        p = _check_json_path(src, (*where, "fields", "rename", src), report)
                        if p is not None and p.last_key is None:
                            report(
                                (*where, "fields", "rename", src),
                                f"rename {src!r}: the path must end with an object key",
                            )
                    if isinstance(dst, str) and not re.fullmatch(r"[^.\[\]]+", dst):
                        report(
                            (*where, "fields", "rename", src),
                            f"rename {src!r} -> {dst!r}: the new name is one key (no . or [)",
                        )
    if not ok:
        return
    try:
        plan_order(names, templates)
    except TemplateError as e:
        at: Path = (*base, "calls") if e.index is None else (*base, "calls", e.index, "path")
        report(at, str(e))


def _check_json_path(text: str, where: Path, report: Report) -> JsonPath | None:
    from portway.config.jsonpath import PathError
    from portway.config.jsonpath import parse as parse_json_path

    try:
        return parse_json_path(text)
    except PathError as e:
        report(where, str(e))
        return None


def _check_profiles(data: dict[str, Any], report: Report) -> set[str]:
    profiles = data.get("profiles")
    names = set(profiles) if isinstance(profiles, dict) else set()
    if "default" in names:
        report(("profiles", "default"), "`default` names requests no profile matched; pick another")
    routes = data.get("routes")
    if not isinstance(routes, list):
        return names
    listeners = data.get("listeners")
    lnames = (
        {lst.get("name", "public") for lst in listeners if isinstance(lst, dict)}
        if isinstance(listeners, list)
        else {"public"}
    )
    if isinstance(profiles, dict):
        for pname, prof in profiles.items():
            m = prof.get("match") if isinstance(prof, dict) else None
            ls = m.get("listeners") if isinstance(m, dict) else None
            if isinstance(ls, list):
                for k, ln in enumerate(ls):
                    if isinstance(ln, str) and ln not in lnames:
                        report(
                            ("profiles", pname, "match", "listeners", k),
                            f"unknown listener {ln!r}",
                        )
    for i, route in enumerate(routes):
        wanted = route.get("profiles") if isinstance(route, dict) else None
        if not isinstance(wanted, list):
            continue
        for k, pn in enumerate(wanted):
            if isinstance(pn, str) and pn != "default" and pn not in names:
                close = suggest(pn, names | {"default"})
                hint = f"; did you mean {close!r}?" if close else ""
                report(("routes", i, "profiles", k), f"unknown profile {pn!r}{hint}")
    return names


#: plugins that turn requests into gRPC calls: their route's upstream must speak HTTP/2
_GRPC_PLUGINS = ("grpc_transcode", "grpc_web")


def _protocol(upstreams: Any, name: Any) -> str:
    u = upstreams.get(name) if isinstance(upstreams, dict) and isinstance(name, str) else None
    p = u.get("protocol", "http1") if isinstance(u, dict) else "http1"
    return p if isinstance(p, str) else "http1"


def _check_protocols(
    route: dict[str, Any],
    i: int,
    up: Any,
    traffic: list[tuple[tuple[Any, ...], str]],
    upstreams: Any,
    report: Report,
) -> None:
    """Traffic rules (split, versions, mirror, fallback) forward over HTTP/1.1 only, and the
    gRPC plugins need an HTTP/2 upstream: both mismatches are config errors, not 502s."""
    if traffic and isinstance(up, str) and _protocol(upstreams, up) != "http1":
        report(
            ("routes", i, "upstream"),
            f"upstream {up!r} speaks {_protocol(upstreams, up)}; split/versions/mirror/fallback "
            "routes support protocol http1 upstreams only",
        )
    for sub, ref in traffic:
        if _protocol(upstreams, ref) != "http1":
            report(
                ("routes", i, *sub),
                f"upstream {ref!r} speaks {_protocol(upstreams, ref)}; split/versions/mirror/"
                "fallback support protocol http1 upstreams only",
            )
    if isinstance(up, str) and _protocol(upstreams, up) == "http1":
        for name in _GRPC_PLUGINS:
            if _binds(route.get("plugins"), name):
                report(
                    ("routes", i, "upstream"),
                    f"{name} needs an upstream with protocol h2c, h2 or auto; {up!r} is http1",
                )


def _answers_all(bindings: Any) -> bool:
    """Some binding answers every request itself, so the route needs no upstream."""
    if _binds(bindings, "request_termination") or _binds(bindings, "mock"):
        return True
    return isinstance(bindings, list) and any(
        isinstance(b, dict)
        and b.get("name") == "redirect"
        and _as_bool(b.get("enabled"), True)
        and isinstance(b.get("config"), dict)
        and b["config"].get("to") is not None
        for b in bindings
    )


def _unknown_upstream(up: str, names: set[str]) -> str:
    close = suggest(up, names)
    if close:
        return f"unknown upstream {up!r}; did you mean {close!r}?"
    if names:
        return f"unknown upstream {up!r}; defined: {', '.join(sorted(names))}"
    return f"unknown upstream {up!r}; no upstreams are defined"


_REWRITE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z]+)?\}")


def _captures(form: str) -> set[str] | None:
    """Parameter names a path form captures (``None``: a regex that does not compile)."""
    if form.startswith("~"):
        try:
            return set(re.compile(form[1:]).groupindex)
        except re.error:
            return None
    return set(_REWRITE_PARAM.findall(form))


def _check_rewrite(route: dict[str, Any], i: int, report: Report) -> None:
    """A ``rewrite`` may only use parameters that every path form of its route captures: a
    form without one would forward an empty segment (``=/orders`` → ``/v2/orders/``)."""
    rw = route.get("rewrite")
    match = route.get("match")
    paths = match.get("paths", ["/"]) if isinstance(match, dict) else ["/"]
    if not isinstance(rw, str) or not isinstance(paths, list):
        return
    wanted = _REWRITE_PARAM.findall(rw)
    for form in paths:
        if not isinstance(form, str):
            continue
        got = _captures(form)
        missing = [w for w in wanted if got is not None and w not in got]
        if missing:
            report(
                ("routes", i, "rewrite"),
                f"rewrite uses {{{missing[0]}}}, which path {form!r} does not capture; "
                "give that path its own route (with its own rewrite)",
            )
            return


def _binds(bindings: Any, plugin: str) -> bool:
    return isinstance(bindings, list) and any(
        isinstance(b, dict) and b.get("name") == plugin and _as_bool(b.get("enabled"), True)
        for b in bindings
    )


def _check_consumers(data: dict[str, Any], report: Report) -> None:
    consumers = data.get("consumers")
    if not isinstance(consumers, list):
        return
    first: dict[str, int] = {}
    for i, c in enumerate(consumers):
        name = c.get("username") if isinstance(c, dict) else None
        if isinstance(name, str):
            if name in first:
                report(
                    ("consumers", i, "username"),
                    f"duplicate consumer {name!r} (first is consumers[{first[name]}])",
                )
            else:
                first[name] = i
