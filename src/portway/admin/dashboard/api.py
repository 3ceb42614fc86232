"""The dashboard's HTTP surface inside the admin API.

``/dashboard`` and ``/dashboard/<asset>`` serve the bundled page without the token (they
hold no data; the page asks for the token once and keeps it in ``sessionStorage``, never in
a URL). Everything under ``/dashboard/api/`` needs the admin token like the rest of the
admin API and is read-only: writes (apply, drain, purge) use the ordinary endpoints.
"""

from __future__ import annotations

import difflib
import importlib.resources
import logging
import re
from typing import TYPE_CHECKING, Any

from portway.admin.dashboard.errors import RecentErrors, get_recent_errors
from portway.admin.dashboard.history import ApplyHistory
from portway.admin.dashboard.live import LiveStats
from portway.admin.responses import json_response
from portway.errors import BadRequestError, GatewayError, NotFoundError
from portway.http.headers import Headers
from portway.http.models import Request, Response

if TYPE_CHECKING:
    from portway.admin.app import AdminApp
    from portway.config.schema import GatewayConfig, RouteConfig

log = logging.getLogger("portway.admin")

#: asset name → content type; nothing else is served from the package
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
#: the page loads only its own script and style sheet and talks only to this origin
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_PUBLIC = re.compile(r"^/dashboard(/(index\.html|app\.js|app\.css)?)?$")


def is_public(path: str) -> bool:
    """Whether ``path`` is one of the dashboard's static files (served without the token)."""
    return _PUBLIC.match(path) is not None


def _asset(name: str) -> bytes:
    return (
        importlib.resources.files("portway.admin.dashboard")
        .joinpath("assets")
        .joinpath(name)
        .read_bytes()
    )


def _int_query(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    from urllib.parse import parse_qsl

    for k, v in parse_qsl(request.query.decode("latin-1"), keep_blank_values=True):
        if k == name:
            if not v.isdigit() or not lo <= int(v) <= hi:
                raise BadRequestError(
                    f"{name} must be a whole number from {lo} to {hi}", code="invalid_query"
                )
            return int(v)
    return default


def _host_ok(patterns: list[str], host: str) -> bool:
    if not patterns:
        return True
    for p in patterns:
        p = p.split(":", 1)[0]
        if p.startswith("*.") and host.endswith(p[1:]) and len(host) > len(p) - 1:
            return True
        if p == host:
            return True
    return False


class DashboardApi:
    """Handlers for ``/dashboard`` and ``/dashboard/api/*`` over an :class:`AdminApp`."""

    def __init__(self, app: AdminApp, errors: RecentErrors | None = None) -> None:
        self.app = app
        self.errors = errors if errors is not None else get_recent_errors()
        metrics = app.metrics
        self.live: LiveStats | None = LiveStats(metrics.merged) if metrics is not None else None
        gw = getattr(app.control, "gateway", None)
        self.history: ApplyHistory | None = ApplyHistory(gw) if gw is not None else None

    async def start(self) -> None:
        if self.live is not None:
            await self.live.start()

    async def aclose(self) -> None:
        if self.live is not None:
            await self.live.aclose()

    def routes(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("/dashboard", {"GET": self.page}),
            ("/dashboard/{asset}", {"GET": self.asset}),
            ("/dashboard/api/overview", {"GET": self.overview}),
            ("/dashboard/api/routes", {"GET": self.route_stats}),
            ("/dashboard/api/explain", {"POST": self.explain}),
            ("/dashboard/api/errors", {"GET": self.recent_errors}),
            ("/dashboard/api/errors/{id}", {"GET": self.error_record}),
            ("/dashboard/api/config", {"GET": self.config_source}),
            ("/dashboard/api/config/diff", {"POST": self.config_diff}),
            ("/dashboard/api/config/history", {"GET": self.config_history}),
            ("/dashboard/api/cache", {"GET": self.cache_stats}),
            ("/dashboard/api/consumers/{username}/limits", {"GET": self.consumer_limits}),
        ]

    # --- static -------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return await self.asset(request, "index.html")

    async def asset(self, request: Request, asset: str) -> Response:
        ctype = ASSETS.get(asset)
        if ctype is None:
            raise NotFoundError(f"no dashboard file {asset!r}", code="not_found")
        headers = Headers.from_pairs(
            [
                ("content-type", ctype),
                ("content-security-policy", _CSP),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("referrer-policy", "no-referrer"),
            ]
        )
        return Response(200, headers, _asset(asset))

    # --- live figures -------------------------------------------------------------------------
    def _live(self) -> LiveStats:
        if self.live is None:
            from portway.admin.responses import UnavailableFeatureError

            raise UnavailableFeatureError("metrics are not enabled in this process")
        return self.live

    async def overview(self, request: Request) -> Response:
        seconds = _int_query(request, "window", 300, 10, 900)
        view = self._live().view(float(seconds))
        status = self.app.control.status()
        routes = view.pop("routes")
        ranked = sorted(routes.items(), key=lambda kv: kv[1]["requests"], reverse=True)
        by_errors = sorted(
            ((n, f) for n, f in routes.items() if f["status"]["5xx"] or f["status"]["4xx"]),
            key=lambda kv: kv[1]["status"]["5xx"] + kv[1]["status"]["4xx"],
            reverse=True,
        )
        return json_response(
            200,
            {
                "status": status,
                **view,
                "top_routes": [{"route": n, **f} for n, f in ranked[:5]],
                "top_error_routes": [{"route": n, **f} for n, f in by_errors[:5]],
                "recent_errors": len(self.errors.records()),
            },
        )

    async def route_stats(self, request: Request) -> Response:
        seconds = _int_query(request, "window", 300, 10, 900)
        live = self.live.view(float(seconds))["routes"] if self.live is not None else {}
        cfg = self.app.control.config()
        globals_ = [b.name for b in cfg.plugins if b.enabled]
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        by_name = {r.name: r for r in cfg.routes}
        for rank, form, route in self.app.control.route_table():
            if route.name in seen:
                continue
            seen.add(route.name)
            r = by_name.get(route.name, route)
            out.append(
                {
                    "rank": rank,
                    "name": r.name,
                    "form": form,
                    "hosts": list(r.match.hosts),
                    "paths": list(r.match.paths),
                    "methods": list(r.match.methods),
                    "headers": dict(r.match.headers),
                    "upstream": r.upstream,
                    "plugins": _effective_plugins(globals_, r),
                    "live": live.get(r.name),
                }
            )
        return json_response(200, {"data": out})

    # --- explain without sending --------------------------------------------------------------
    async def explain(self, request: Request) -> Response:
        body = await self.app._read_json(request)
        if not isinstance(body, dict):
            raise BadRequestError("send a JSON object", code="invalid_body")
        method = str(body.get("method") or "GET").upper()
        raw_path = str(body.get("path") or "/")
        host = str(body.get("host") or "").lower().rsplit(":", 1)[0] if body.get("host") else ""
        hdrs = body.get("headers") or {}
        if not isinstance(hdrs, dict):
            raise BadRequestError("headers must be an object", code="invalid_body")
        return json_response(200, probe(self.app.control.config(), method, host, raw_path, hdrs))

    # --- errors, config, cache ----------------------------------------------------------------
    async def recent_errors(self, request: Request) -> Response:
        limit = _int_query(request, "limit", 50, 1, 200)
        rows = [{k: v for k, v in d.items() if k != "explain"} for d in self.errors.records()]
        return json_response(200, {"data": rows[:limit]})

    async def error_record(self, request: Request, id: str) -> Response:
        rec = self.errors.find(id)
        if rec is None:
            raise NotFoundError(f"no recent error {id!r}", code="not_found")
        return json_response(200, rec)

    def _config_view(self) -> tuple[str, bool]:
        """The running config's text as the page shows it: the operator's own file (comments
        kept) unless it holds secrets, which are then replaced by ``<redacted>`` (an apply
        restores them, as ``PUT /config`` does for a document fetched with ``GET /config``)."""
        from portway.admin.redact import redact_config
        from portway.admin.source import dump_source, load_source

        text = self.app.control.config_text()
        try:
            data = load_source(text)
        except GatewayError:
            return text, False
        redacted = redact_config(data)
        if redacted == data:
            return text, False
        return dump_source(redacted), True

    async def config_source(self, request: Request) -> Response:
        st = self.app.control.status()
        text, redacted = self._config_view()
        return json_response(
            200,
            {
                "yaml": text,
                "redacted": redacted,
                "config_hash": st.get("config_hash"),
                "config_version": st.get("config_version"),
                "config_path": st.get("config_path"),
            },
        )

    async def config_diff(self, request: Request) -> Response:
        raw = await self.app._read(request)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadRequestError("the body is not valid UTF-8", code="invalid_yaml") from None
        running = self._config_view()[0]
        diff = difflib.unified_diff(
            running.splitlines(keepends=True),
            text.splitlines(keepends=True),
            "running",
            "edited",
        )
        return json_response(200, {"diff": "".join(diff), "changed": running != text})

    async def config_history(self, request: Request) -> Response:
        return json_response(
            200, {"data": self.history.entries() if self.history is not None else []}
        )

    async def cache_stats(self, request: Request) -> Response:
        try:
            from portway.plugins.cache.registry import stats
        except ImportError:  # pragma: no cover - the cache plugin ships with the package
            raise GatewayError("the cache plugin is not available") from None
        data = stats()
        routes: dict[str, Any] = {}
        for route, counters in data.get("routes", {}).items():
            hits = sum(v for k, v in counters.items() if k.startswith("hit") or k == "stale")
            lookups = hits + sum(v for k, v in counters.items() if k.startswith("miss"))
            routes[route] = {
                "counters": counters,
                "hit_ratio": round(hits / lookups, 4) if lookups else None,
            }
        return json_response(200, {"routes": routes, "stores": data.get("stores", [])})

    async def consumer_limits(self, request: Request, username: str) -> Response:
        from portway.admin.dashboard.limits import consumer_limits

        gw = getattr(self.app.control, "gateway", None)
        if gw is None:
            from portway.admin.responses import UnavailableFeatureError

            raise UnavailableFeatureError("rate-limit state needs a running gateway")
        rows = await consumer_limits(gw.graph, username)
        if rows is None:
            raise NotFoundError(f"no consumer named {username!r}", code="not_found")
        return json_response(200, {"username": username, "data": rows})


def _effective_plugins(globals_: list[str], route: RouteConfig) -> list[dict[str, str]]:
    """The route's chain: global bindings (unless the route binds the same name), then the
    route's own, as the builder merges them."""
    own = [b.name for b in route.plugins if b.enabled]
    out = [{"name": n, "from": "global"} for n in globals_ if n not in own]
    out += [{"name": n, "from": "route"} for n in own]
    return out


def probe(
    cfg: GatewayConfig, method: str, host: str, raw_path: str, headers: dict[str, Any]
) -> dict[str, Any]:
    """Which route, plugins and upstream a request would take, and why each other route
    would not: the router's own answer on a router built from the running config."""
    from portway.http.path import normalize
    from portway.routing.entry import header_regex
    from portway.routing.router import Router

    path_only, _, _query = raw_path.partition("?")
    try:
        path = normalize(path_only.encode("utf-8"))
    except GatewayError as e:
        return {"matched": False, "error": e.message, "path": path_only, "routes": []}
    hs = Headers.from_pairs([(str(k).lower(), str(v)) for k, v in headers.items()])
    router = Router(cfg.routes)
    m = router.match(host, method, path, hs)
    globals_ = [b.name for b in cfg.plugins if b.enabled]
    reasons: list[dict[str, Any]] = []
    for rank, _form, r in router.table():
        why: list[str] = []
        if not _host_ok(list(r.match.hosts), host):
            why.append(f"host {host or '(none)'!r} is not one of {r.match.hosts}")
        if r.match.methods and method not in r.match.methods:
            why.append(f"method {method} is not one of {r.match.methods}")
        for k, want in r.match.headers.items():
            got = hs.get(k)
            if want.startswith("~"):
                if got is None or header_regex(want[1:]).search(got) is None:
                    why.append(f"header {k} does not match {want}")
            elif got != want:
                why.append(f"header {k} is not {want!r}")
        if (
            Router(
                [
                    r.model_copy(
                        update={
                            "match": r.match.model_copy(
                                update={"hosts": [], "methods": [], "headers": {}}
                            )
                        }
                    )
                ]
            ).match("", method, path, Headers())
            is None
        ):
            why.append(f"path {path} matches none of {r.match.paths}")
        reasons.append(
            {
                "rank": rank,
                "route": r.name,
                "matches": not why,
                "chosen": m is not None and m.route.name == r.name,
                "why_not": why,
            }
        )
    out: dict[str, Any] = {"matched": m is not None, "path": path, "routes": reasons}
    if m is None:
        allowed = sorted(router.allowed_methods(host, path, hs))
        out["status"] = 405 if allowed else 404
        out["allowed_methods"] = allowed
        return out
    route = m.route
    out.update(
        {
            "route": route.name,
            "pattern": m.pattern,
            "params": dict(m.params),
            "plugins": _effective_plugins(globals_, route),
            "upstream": route.upstream,
        }
    )
    return out
