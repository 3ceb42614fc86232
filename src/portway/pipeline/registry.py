"""Plugin registry: name → class, built-ins plus the ``portway.plugins`` entry-point group."""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from portway.pipeline.plugin import Plugin

log = logging.getLogger("portway.plugins")

#: built-in plugin name → "module:Class"; imported lazily so unused plugins cost nothing
BUILTINS: dict[str, str] = {
    "request_id": "portway.plugins.request_id.plugin:RequestIdPlugin",
    "headers": "portway.plugins.headers.plugin:HeadersPlugin",
    "request_termination": "portway.plugins.request_termination.plugin:RequestTerminationPlugin",
    "access_log": "portway.plugins.access_log.plugin:AccessLogPlugin",
    "key_auth": "portway.plugins.key_auth.plugin:KeyAuthPlugin",
    "basic_auth": "portway.plugins.basic_auth.plugin:BasicAuthPlugin",
    "jwt": "portway.plugins.jwt.plugin:JwtPlugin",
    "oauth2_introspection": "portway.plugins.oauth2_introspection.plugin:IntrospectionPlugin",
    "mtls_auth": "portway.plugins.mtls_auth.plugin:MtlsAuthPlugin",
    "auth": "portway.plugins.auth.plugin:AuthPlugin",
    "acl": "portway.plugins.acl.plugin:AclPlugin",
    "scopes": "portway.plugins.scopes.plugin:ScopesPlugin",
    "identity_headers": "portway.plugins.identity_headers.plugin:IdentityHeadersPlugin",
    "rate_limit": "portway.plugins.rate_limit.plugin:RateLimitPlugin",
    "concurrency_limit": "portway.plugins.concurrency_limit.plugin:ConcurrencyLimitPlugin",
    "quota": "portway.plugins.quota.plugin:QuotaPlugin",
    "cache": "portway.plugins.cache.plugin:CachePlugin",
    "cors": "portway.plugins.cors.plugin:CorsPlugin",
    "ip_restriction": "portway.plugins.ip_restriction.plugin:IpRestrictionPlugin",
    "redirect": "portway.plugins.redirect.plugin:RedirectPlugin",
    "mock": "portway.plugins.mock.plugin:MockPlugin",
    "compression": "portway.plugins.compression.plugin:CompressionPlugin",
    "graphql": "portway.plugins.graphql.plugin:GraphqlPlugin",
}


class UnknownPluginError(LookupError):
    pass


class Registry:
    """Resolves plugin names to classes: :meth:`register`-ed classes, then built-ins, then the
    ``portway.plugins`` entry-point group (scanned once, on first use). An entry point never
    overrides a built-in name. Failures raise :class:`UnknownPluginError` with a message fit
    for a config error."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Plugin[Any]]] = {}
        self._external: dict[str, Any] | None = None

    def register(self, cls: type[Plugin[Any]]) -> None:
        self._classes[cls.name] = cls

    def _load_external(self) -> dict[str, Any]:
        if self._external is None:
            self._external = {}
            for ep in entry_points(group="portway.plugins"):
                if ep.name not in BUILTINS:
                    self._external[ep.name] = ep
        return self._external

    def names(self) -> list[str]:
        return sorted({*BUILTINS, *self._classes, *self._load_external()})

    def get(self, name: str) -> type[Plugin[Any]]:
        cls = self._classes.get(name)
        if cls is not None:
            return cls
        spec = BUILTINS.get(name)
        if spec is not None:
            mod, _, attr = spec.partition(":")
            try:
                loaded = getattr(importlib.import_module(mod), attr)
            except (ImportError, AttributeError) as e:
                raise UnknownPluginError(f"plugin {name!r} is not available: {e}") from e
        else:
            ep = self._load_external().get(name)
            if ep is None:
                raise UnknownPluginError(
                    f"unknown plugin {name!r}; known: {', '.join(self.names())}"
                )
            try:
                loaded = ep.load()
            except Exception as e:  # a broken third-party package is a config error, not a crash
                raise UnknownPluginError(
                    f"plugin {name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}"
                ) from e
        if not (isinstance(loaded, type) and issubclass(loaded, Plugin)):
            raise UnknownPluginError(f"plugin {name!r} does not resolve to a Plugin class")
        if loaded.name != name:
            # the name is what logs, metrics and errors report: it must be the bound one
            raise UnknownPluginError(
                f"plugin {name!r} resolves to a class named {loaded.name!r}; "
                "a plugin class's `name` must equal its registered name"
            )
        self._classes[name] = loaded
        return loaded


registry = Registry()
