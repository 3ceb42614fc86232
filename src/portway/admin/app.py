"""The admin API: ``AdminApp.handle(request) -> Response``, served on its own listener.

Every call needs ``Authorization: Bearer <admin.token>`` (constant-time compare) unless the
listener is on loopback with ``admin.auth: false``. Errors use the gateway's JSON error format
with precise statuses: 400 malformed body, 401 auth, 404 unknown resource, 405 with ``Allow``,
409 conflict, 413 body too large, 415 media type, 422 invalid config (``errors`` lists each
problem with its YAML path and line). Every change to the configuration (``PUT /config``,
reloads, consumer edits) runs under one lock, so concurrent writers are serialised and each
one validates and applies a whole document: a config is never half-applied.

The admin section itself (address, token, auth) is read once at start: changing it needs a
restart, so a config pushed through the API cannot lock its caller out mid-flight.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

import portway
from portway.admin import consumers as cons
from portway.admin.control import GatewayControl
from portway.admin.dashboard.api import is_public
from portway.admin.openapi import CREDENTIAL_KINDS, YAML_TYPES, openapi_spec
from portway.admin.redact import contains_redacted, redact_config, restore_redacted
from portway.admin.responses import (
    InvalidConfigError,
    UnavailableFeatureError,
    UnsupportedMediaTypeError,
    error_response,
    is_loopback,
    issue_dict,
    json_response,
    media_type,
)
from portway.admin.routes import AdminRoute
from portway.admin.source import dump_source, load_source
from portway.config.schema import AdminConfig, ConsumerConfig
from portway.errors import (
    BadRequestError,
    GatewayError,
    MethodNotAllowedError,
    NotFoundError,
    UnauthorizedError,
)
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.observability.metrics import Metrics, target_snapshot

log = logging.getLogger("portway.admin")

#: request bodies above this are refused with 413 (configs are far smaller)
MAX_BODY = 8 * 1024 * 1024
_JSON_TYPES = ("application/json",)

#: what ``_read_json(required=False)`` returns for an empty body (``None`` is JSON ``null``)
_NO_BODY: Any = object()


class AdminApp:
    """The admin API over a :class:`~portway.admin.control.GatewayControl`.

    ``handle`` never raises: every failure becomes a JSON error response.
    """

    def __init__(
        self,
        control: GatewayControl,
        config: AdminConfig | None = None,
        *,
        metrics: Metrics | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.control = control
        self.config = config or AdminConfig.model_validate({})
        self.metrics = metrics
        self.max_body = max_body
        host = self.config.address.rpartition(":")[0]
        self.auth_required = self.config.auth or not is_loopback(host)
        self._token = self.config.token.encode("utf-8") if self.config.token else None
        self._lock = asyncio.Lock()
        self._started = time.time()
        #: consumers created or changed through the API and not written back to the file
        self._unsaved: set[str] = set()
        self._routes = [
            AdminRoute("/status", {"GET": self.get_status}),
            AdminRoute("/config", {"GET": self.get_config, "PUT": self.put_config}),
            AdminRoute("/config/validate", {"POST": self.validate_config}),
            AdminRoute("/reload", {"POST": self.reload}),
            AdminRoute("/routes", {"GET": self.list_routes}),
            AdminRoute("/routes/{name}", {"GET": self.get_route}),
            AdminRoute("/upstreams", {"GET": self.list_upstreams}),
            AdminRoute("/upstreams/{name}", {"GET": self.get_upstream}),
            AdminRoute(
                "/upstreams/{name}/targets/{target}/drain",
                {"POST": self.drain_target, "DELETE": self.undrain_target},
            ),
            AdminRoute("/consumers", {"GET": self.list_consumers, "POST": self.create_consumer}),
            AdminRoute(
                "/consumers/{username}",
                {
                    "GET": self.get_consumer,
                    "PUT": self.put_consumer,
                    "DELETE": self.delete_consumer,
                },
            ),
            AdminRoute("/consumers/{username}/credentials", {"GET": self.list_credentials}),
            AdminRoute("/consumers/{username}/credentials/{kind}", {"POST": self.add_credential}),
            AdminRoute(
                "/consumers/{username}/credentials/{kind}/{id}",
                {"DELETE": self.delete_credential},
            ),
            AdminRoute("/cache", {"DELETE": self.purge_cache}),
            AdminRoute("/cache/{key:path}", {"DELETE": self.purge_cache_key}),
            AdminRoute("/metrics", {"GET": self.get_metrics}),
            AdminRoute("/openapi.json", {"GET": self.get_openapi}),
        ]
        from portway.admin.dashboard.api import DashboardApi

        #: the operator dashboard (``/dashboard``): static page + read-only aggregates
        self.dashboard = DashboardApi(self)
        self._routes += [AdminRoute(p, h) for p, h in self.dashboard.routes()]

    # --- dispatch --------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        try:
            if not is_public(request.path):
                self._authorize(request)
            resp = await self._dispatch(request)
        except GatewayError as e:
            resp = error_response(e)
        except Exception:
            log.exception("admin %s %s failed", request.method, request.path)
            resp = error_response(GatewayError("internal error"))
        resp.headers.set("cache-control", "no-store")
        return resp

    def _authorize(self, request: Request) -> None:
        if not self.auth_required:
            return
        challenge = 'Bearer realm="portway-admin"'
        value = request.headers.get_raw(b"authorization")
        if value is None:
            raise UnauthorizedError(
                "missing bearer token", headers=[("www-authenticate", challenge)]
            )
        scheme, _, cred = value.strip().partition(b" ")
        token = cred.strip()
        ok = (
            self._token is not None
            and scheme.lower() == b"bearer"
            and hmac.compare_digest(token, self._token)
        )
        if not ok:
            raise UnauthorizedError(
                "invalid bearer token",
                headers=[("www-authenticate", challenge + ', error="invalid_token"')],
            )

    async def _dispatch(self, request: Request) -> Response:
        segs = request.path.strip("/").split("/")
        for route in self._routes:
            params = route.match(segs)
            if params is None:
                continue
            method = request.method
            fn = route.handlers.get("GET" if method == "HEAD" else method)
            if fn is not None:
                return await fn(request, *params)
            allow = route.allow()
            if method == "OPTIONS":
                return Response(204, Headers.from_pairs([("allow", allow)]))
            raise MethodNotAllowedError(
                f"{method} is not allowed on {request.path}", headers=[("allow", allow)]
            )
        raise NotFoundError(f"no admin resource at {request.path}", code="not_found")

    # --- helpers ---------------------------------------------------------------------------
    async def _read(self, request: Request) -> bytes:
        if request.body is None:
            return b""
        return await request.body.read_all(self.max_body)

    async def _read_json(self, request: Request, *, required: bool = True) -> Any:
        raw = await self._read(request)
        mt = media_type(request)
        if not raw.strip():
            if required:
                raise BadRequestError("a JSON body is required", code="empty_body")
            return _NO_BODY
        if mt is None or not (mt in _JSON_TYPES or mt.endswith("+json")):
            raise UnsupportedMediaTypeError(
                f"send the body as application/json (got {mt or 'no content type'})",
                headers=[("accept-post", "application/json")],
            )
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise BadRequestError(f"invalid JSON: {e}", code="invalid_json") from None

    async def _read_config_text(self, request: Request) -> str:
        """The config document of the body as YAML text, after restoring redacted secrets."""
        raw = await self._read(request)
        mt = media_type(request)
        if not raw.strip():
            raise BadRequestError("a configuration document is required", code="empty_body")
        if mt is not None and (mt in _JSON_TYPES or mt.endswith("+json")):
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise BadRequestError(f"invalid JSON: {e}", code="invalid_json") from None
            if not isinstance(data, dict):
                raise InvalidConfigError(
                    [{"message": "the config must be a JSON object at the top level"}]
                )
            return dump_source(self._restore(data))
        if mt is not None and mt not in YAML_TYPES:
            raise UnsupportedMediaTypeError(
                f"send the config as application/yaml or application/json (got {mt})"
            )
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadRequestError("the body is not valid UTF-8", code="invalid_yaml") from None
        data = load_source(text)
        if contains_redacted(data):
            return dump_source(self._restore(data))
        return text

    def _restore(self, data: dict[str, Any]) -> dict[str, Any]:
        if not contains_redacted(data):
            return data
        current = self.control.config().model_dump(mode="json")
        restored: dict[str, Any] = restore_redacted(data, current)
        return restored

    def _write_back(self, request: Request) -> bool:
        for k, v in parse_qsl(request.query.decode("latin-1"), keep_blank_values=True):
            if k == "write_back":
                if v.lower() in ("", "1", "true", "yes"):
                    return True
                if v.lower() in ("0", "false", "no"):
                    return False
                raise BadRequestError("write_back must be true or false", code="invalid_query")
        return self.config.write_back

    async def _apply(self, text: str, write_back: bool) -> Response:
        """Apply a whole document (caller holds the lock)."""
        if write_back and self.control.config_path is None:
            raise cons.ConflictError("no config file to write back to", code="no_config_file")
        errors = await self.control.apply_config_text(text, write_back=write_back)
        if errors:
            raise InvalidConfigError(errors, "the configuration was rejected; nothing changed")
        return json_response(
            200,
            {
                "result": "ok",
                "config_hash": self.control.status().get("config_hash"),
                "written": write_back,
            },
        )

    # --- status and config -----------------------------------------------------------------
    async def get_status(self, request: Request) -> Response:
        st = dict(self.control.status())
        last = dict(st.get("last_reload") or {"result": "none", "errors": [], "at": None})
        last["errors"] = [issue_dict(e) for e in last.get("errors") or []]
        if last.get("result") not in ("ok", "error", "none"):
            last["result"] = "none"
        st["last_reload"] = last
        st.setdefault("uptime", round(time.time() - self._started, 3))
        st.setdefault("workers", 1)
        st.setdefault("config_hash", None)
        st["version"] = portway.__version__
        st.setdefault("python", sys.version.split()[0])
        return json_response(200, st)

    async def get_config(self, request: Request) -> Response:
        return json_response(200, redact_config(self.control.config().model_dump(mode="json")))

    async def put_config(self, request: Request) -> Response:
        write_back = self._write_back(request)
        text = await self._read_config_text(request)
        async with self._lock:
            return await self._apply(text, write_back)

    async def validate_config(self, request: Request) -> Response:
        text = await self._read_config_text(request)
        errors = await self.control.validate_config_text(text)
        if errors:
            raise InvalidConfigError(errors)
        return json_response(200, {"valid": True, "errors": []})

    async def reload(self, request: Request) -> Response:
        if self.control.config_path is None:
            raise cons.ConflictError("no config file to reload from", code="no_config_file")
        async with self._lock:
            before = {c.username for c in self.control.config().consumers}
            errors = await self.control.reload()
            if errors:
                raise InvalidConfigError(errors, "the reload was rejected; nothing changed")
            after = {c.username for c in self.control.config().consumers}
            warnings = cons.reload_warnings(self._unsaved, before, after)
            self._unsaved.clear()
        for w in warnings:
            log.warning("admin reload: %s", w)
        return json_response(
            200,
            {
                "result": "ok",
                "config_hash": self.control.status().get("config_hash"),
                "written": False,
                "warnings": warnings,
            },
        )

    # --- routes and upstreams --------------------------------------------------------------
    async def list_routes(self, request: Request) -> Response:
        cfg = self.control.config()
        ranks: dict[str, int] = {}
        order: list[str] = []
        for rank, _path, route in self.control.route_table():
            if route.name not in ranks:
                ranks[route.name] = rank
                order.append(route.name)
        by_name = {r.name: r for r in cfg.routes}
        order += [r.name for r in cfg.routes if r.name not in ranks]
        data = []
        for name in order:
            r = by_name.get(name)
            if r is None:
                continue
            data.append(
                {
                    "name": r.name,
                    "rank": ranks.get(name),
                    "hosts": list(r.match.hosts),
                    "paths": list(r.match.paths),
                    "methods": list(r.match.methods),
                    "upstream": r.upstream,
                    "plugins": [b.name for b in r.plugins if b.enabled],
                }
            )
        return json_response(200, {"data": data})

    async def get_route(self, request: Request, name: str) -> Response:
        for r in self.control.config().routes:
            if r.name == name:
                return json_response(200, redact_config(r.model_dump(mode="json")))
        raise NotFoundError(f"no route named {name!r}", code="not_found")

    def _upstream(self, name: str) -> Any:
        up = self.control.upstreams().get(name)
        if up is None:
            raise NotFoundError(f"no upstream named {name!r}", code="not_found")
        return up

    @staticmethod
    def _upstream_view(name: str, up: Any) -> dict[str, Any]:
        cfg = getattr(up, "config", None)
        return {
            "name": name,
            "balancing": str(getattr(cfg, "balancing", "")),
            "targets": target_snapshot(up),
        }

    async def list_upstreams(self, request: Request) -> Response:
        ups = self.control.upstreams()
        return json_response(
            200, {"data": [self._upstream_view(n, u) for n, u in sorted(ups.items())]}
        )

    async def get_upstream(self, request: Request, name: str) -> Response:
        return json_response(200, self._upstream_view(name, self._upstream(name)))

    async def _set_draining(self, name: str, target_id: str, draining: bool) -> Response:
        up = self._upstream(name)
        if not up.set_draining(target_id, draining):
            raise NotFoundError(f"upstream {name!r} has no target {target_id!r}", code="not_found")
        log.info("admin: target %s of upstream %s draining=%s", target_id, name, draining)
        lagging = await self.control.share(
            {"op": "drain", "upstream": name, "target": target_id, "draining": draining}
        )
        return json_response(
            200,
            {"upstream": name, "target": target_id, "draining": draining, "lagging": lagging},
        )

    async def drain_target(self, request: Request, name: str, target: str) -> Response:
        return await self._set_draining(name, target, True)

    async def undrain_target(self, request: Request, name: str, target: str) -> Response:
        return await self._set_draining(name, target, False)

    # --- consumers -------------------------------------------------------------------------
    def _consumer(self, username: str) -> ConsumerConfig:
        for c in self.control.config().consumers:
            if c.username == username:
                return c
        raise NotFoundError(f"no consumer named {username!r}", code="not_found")

    async def _edit_source(
        self,
        request: Request,
        edit: Callable[[dict[str, Any]], None],
        made: str | None = None,
    ) -> None:
        """Apply ``edit`` to the source document and the result to the gateway (caller holds
        the lock). ``made``: the consumer the edit creates or changes, remembered until it is
        written back so that a reload can say it was dropped."""
        doc = load_source(self.control.config_text())
        edit(doc)
        write_back = self._write_back(request)
        await self._apply(dump_source(doc), write_back)
        if write_back:
            self._unsaved.clear()  # the file now holds every change made so far
        elif made is not None:
            self._unsaved.add(made)

    async def list_consumers(self, request: Request) -> Response:
        return json_response(
            200, {"data": [cons.consumer_view(c) for c in self.control.config().consumers]}
        )

    async def get_consumer(self, request: Request, username: str) -> Response:
        return json_response(200, cons.consumer_view(self._consumer(username)))

    async def _consumer_body(
        self, request: Request, username: str | None
    ) -> tuple[dict[str, Any], cons.CredentialSpec]:
        """The consumer entry to store (without credentials) and what to do with them."""
        try:
            return await cons.consumer_body(await self._read_json(request), username)
        except cons.InvalidConsumer as e:
            raise InvalidConfigError(e.issues, "invalid consumer") from None

    async def create_consumer(self, request: Request) -> Response:
        entry, spec = await self._consumer_body(request, None)
        name = entry["username"]
        async with self._lock:
            if any(c.username == name for c in self.control.config().consumers):
                raise cons.ConflictError(f"consumer {name!r} already exists")

            def edit(doc: dict[str, Any]) -> None:
                cons.source_consumers(doc).append(cons.with_credentials(entry, spec, None, None))

            await self._edit_source(request, edit, made=name)
        return json_response(
            201,
            cons.consumer_view(self._consumer(name)),
            [("location", f"/consumers/{quote(name, safe='')}")],
        )

    async def put_consumer(self, request: Request, username: str) -> Response:
        entry, spec = await self._consumer_body(request, username)
        async with self._lock:
            current = next(
                (c for c in self.control.config().consumers if c.username == username), None
            )

            def edit(doc: dict[str, Any]) -> None:
                i = cons.source_index(doc, username)
                items = cons.source_consumers(doc)
                old = items[i] if i is not None else None
                new = cons.with_credentials(entry, spec, current, old)
                if i is None:
                    items.append(new)
                else:
                    items[i] = new

            await self._edit_source(request, edit, made=username)
        view = cons.consumer_view(self._consumer(username))
        return json_response(201 if current is None else 200, view)

    async def delete_consumer(self, request: Request, username: str) -> Response:
        async with self._lock:
            self._consumer(username)

            def edit(doc: dict[str, Any]) -> None:
                i = cons.source_index(doc, username)
                if i is None:
                    raise cons.ConflictError("the consumer is not in the config source")
                del cons.source_consumers(doc)[i]

            await self._edit_source(request, edit)
        return Response(204)

    async def list_credentials(self, request: Request, username: str) -> Response:
        return json_response(200, {"data": cons.credential_views(self._consumer(username))})

    def _kind(self, kind: str) -> str:
        if kind not in CREDENTIAL_KINDS:
            raise NotFoundError(
                f"unknown credential kind {kind!r}; use one of {', '.join(CREDENTIAL_KINDS)}",
                code="not_found",
            )
        return kind

    async def add_credential(self, request: Request, username: str, kind: str) -> Response:
        self._kind(kind)
        self._consumer(username)
        body = await self._read_json(request, required=False)
        if body is _NO_BODY:
            body = {}
        if not isinstance(body, dict):
            raise cons.UnprocessableError("the credential must be a JSON object")
        cred, generated = await cons.prepare_credential(kind, body)
        async with self._lock:
            self._consumer(username)

            def edit(doc: dict[str, Any]) -> None:
                i = cons.source_index(doc, username)
                if i is None:
                    raise cons.ConflictError("the consumer is not in the config source")
                entry = cons.source_consumers(doc)[i]
                creds = entry.setdefault("credentials", {})
                if not isinstance(creds, dict):
                    raise cons.ConflictError("the consumer's credentials are not a mapping")
                creds.setdefault(kind, []).append(cred)

            await self._edit_source(request, edit, made=username)
        from portway.admin.redact import credential_fingerprint, redact_credential

        view: dict[str, Any] = {
            "id": credential_fingerprint(kind, cred),
            "kind": kind,
            **redact_credential(cred),
        }
        if generated is not None:
            view["generated_key"] = generated
        return json_response(201, view)

    async def delete_credential(
        self, request: Request, username: str, kind: str, cred_id: str
    ) -> Response:
        self._kind(kind)
        async with self._lock:
            c = self._consumer(username)
            idx = cons.find_credential(c, kind, cred_id)
            if idx is None:
                raise NotFoundError(
                    f"consumer {username!r} has no {kind} credential {cred_id!r}", code="not_found"
                )

            def edit(doc: dict[str, Any]) -> None:
                i = cons.source_index(doc, username)
                items = None
                if i is not None:
                    creds = cons.source_consumers(doc)[i].get("credentials")
                    items = creds.get(kind) if isinstance(creds, dict) else None
                if not isinstance(items, list) or idx >= len(items):
                    raise cons.ConflictError("the credential is not in the config source")
                del items[idx]

            await self._edit_source(request, edit, made=username)
        return Response(204)

    # --- cache, metrics, spec --------------------------------------------------------------
    @staticmethod
    def _cache_registry() -> Any:
        try:
            from portway.plugins.cache import registry
        except ImportError:
            raise UnavailableFeatureError("the cache plugin is not installed") from None
        return registry

    async def purge_cache(self, request: Request) -> Response:
        route = None
        for k, v in parse_qsl(request.query.decode("latin-1"), keep_blank_values=True):
            if k == "route":
                if not v:
                    raise BadRequestError("route must not be empty", code="invalid_query")
                route = v
        reg = self._cache_registry()
        n = await (reg.purge_route(route) if route is not None else reg.purge_all())
        await self.control.share({"op": "purge", "route": route})
        return json_response(200, {"purged": int(n)})

    async def purge_cache_key(self, request: Request, key: str) -> Response:
        n = await self._cache_registry().purge_key(key)
        # other workers (memory stores) may hold the key even when this one does not
        await self.control.share({"op": "purge", "key": key})
        if not n:
            raise NotFoundError(f"nothing cached under {key!r}", code="not_found")
        return json_response(200, {"purged": int(n)})

    async def get_metrics(self, request: Request) -> Response:
        if self.metrics is None:
            raise UnavailableFeatureError("metrics are not enabled in this process")
        body, content_type = self.metrics.render(request.headers.get("accept"))
        return Response(200, Headers.from_pairs([("content-type", content_type)]), body)

    async def get_openapi(self, request: Request) -> Response:
        return json_response(200, openapi_spec())
