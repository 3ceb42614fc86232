"""Plugin registry: name → class. Built-ins, the ``portway.plugins`` entry-point group, plugin
files in the directories of ``plugin_paths``, and a binding's ``module: pkg.mod:Class``."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
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
    "oidc": "portway.plugins.oidc.plugin:OidcPlugin",
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
    "fault_injection": "portway.plugins.fault_injection.plugin:FaultInjectionPlugin",
    "request_validation": "portway.plugins.request_validation.plugin:RequestValidationPlugin",
    "request_transformer": "portway.plugins.request_transformer.plugin:RequestTransformerPlugin",
    "response_transformer": (
        "portway.plugins.response_transformer.plugin:ResponseTransformerPlugin"
    ),
    "publish": "portway.plugins.publish.plugin:PublishPlugin",
    "grpc_transcode": "portway.plugins.grpc_transcode.plugin:GrpcTranscodePlugin",
    "grpc_web": "portway.plugins.grpc_web.plugin:GrpcWebPlugin",
    "soap": "portway.plugins.soap.plugin:SoapPlugin",
    "graphql": "portway.plugins.graphql.plugin:GraphqlPlugin",
}


class UnknownPluginError(LookupError):
    pass


class Registry:
    """Resolves plugin names to classes, looking in this order: :meth:`register`-ed classes
    (and those a binding's ``module`` loaded), built-ins, the ``portway.plugins`` entry-point
    group (scanned once, on first use), then ``<dir>/<name>.py`` or ``<dir>/<name>/`` in each
    directory of ``plugin_paths`` (:meth:`add_paths`). Neither an entry point nor a file
    overrides a built-in name. Failures raise :class:`UnknownPluginError` with a message fit
    for a config error, saying where Portway looked."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Plugin[Any]]] = {}
        self._external: dict[str, Any] | None = None
        self._paths: list[Path] = []

    def register(self, cls: type[Plugin[Any]]) -> None:
        self._classes[cls.name] = cls

    def add_paths(self, paths: list[Path]) -> None:
        """Directories to find plugin files in (``plugin_paths``); they also go on
        ``sys.path`` so a plugin file can import its sibling modules, and ``module:``
        bindings can name modules there."""
        for p in paths:
            p = p.resolve()
            if p not in self._paths:
                self._paths.append(p)
            if str(p) not in sys.path:
                sys.path.append(str(p))

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    def _load_external(self) -> dict[str, Any]:
        if self._external is None:
            # imported here: importlib.metadata (with email, csv, zipfile) costs ~1 MB of
            # RSS, and only a plugin name that is not a built-in needs it
            from importlib.metadata import entry_points

            self._external = {}
            for ep in entry_points(group="portway.plugins"):
                if ep.name not in BUILTINS:
                    self._external[ep.name] = ep
        return self._external

    def names(self) -> list[str]:
        files = {
            f.stem if f.suffix == ".py" else f.name
            for d in self._paths
            if d.is_dir()
            for f in d.iterdir()
            if (f.suffix == ".py" and not f.name.startswith("_")) or (f / "__init__.py").is_file()
        }
        return sorted({*BUILTINS, *self._classes, *self._load_external(), *files})

    def where_looked(self, name: str) -> str:
        """Where a plugin called ``name`` was searched for, for an unknown-name error."""
        eps = sorted(self._load_external())
        where = [
            "built-ins",
            "entry points of group 'portway.plugins' ("
            + (", ".join(eps) if eps else "none installed")
            + ")",
        ]
        if self._paths:
            where.append(
                "plugin_paths: "
                + ", ".join(f"{d / (name + '.py')} or {d / name}/__init__.py" for d in self._paths)
            )
        else:
            where.append("no plugin_paths configured")
        return "; ".join(where)

    def _from_file(self, name: str) -> Any:
        for d in self._paths:
            for f in (d / f"{name}.py", d / name / "__init__.py"):
                if f.is_file():
                    return self._import_file(name, f)
        return None

    @staticmethod
    def _import_file(name: str, f: Path) -> Any:
        modname = name if f.name != "__init__.py" else f.parent.name
        existing = sys.modules.get(modname)
        if existing is None or getattr(existing, "__file__", None) != str(f):
            spec = importlib.util.spec_from_file_location(modname, f)
            if spec is None or spec.loader is None:
                raise UnknownPluginError(f"plugin {name!r}: cannot import {f}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                sys.modules.pop(modname, None)
                raise UnknownPluginError(
                    f"plugin {name!r} ({f}) failed to load: {type(e).__name__}: {e}"
                ) from e
            existing = module
        for v in vars(existing).values():
            if isinstance(v, type) and issubclass(v, Plugin) and getattr(v, "name", None) == name:
                return v
        raise UnknownPluginError(f"{f} defines no Plugin class whose name is {name!r}")

    def load_module(self, name: str, spec: str) -> type[Plugin[Any]]:
        """A binding's ``module: pkg.mod:Class``: import it (``plugin_paths`` are on
        ``sys.path``), check it, and register it under ``name``."""
        mod, sep, attr = spec.partition(":")
        if not sep or not mod or not attr:
            raise UnknownPluginError(f"module {spec!r}: use 'package.module:Class'")
        if name in BUILTINS:
            raise UnknownPluginError(f"{name!r} is a built-in plugin; it cannot come from a module")
        try:
            loaded = getattr(importlib.import_module(mod), attr)
        except Exception as e:
            looked = ", ".join(map(str, self._paths)) or "no plugin_paths"
            raise UnknownPluginError(
                f"plugin {name!r}: cannot load {spec!r} ({type(e).__name__}: {e}); "
                f"searched sys.path and plugin_paths ({looked})"
            ) from e
        cls = self._check(name, loaded)
        self._classes[name] = cls
        return cls

    @staticmethod
    def _check(name: str, loaded: Any) -> type[Plugin[Any]]:
        if not (isinstance(loaded, type) and issubclass(loaded, Plugin)):
            raise UnknownPluginError(f"plugin {name!r} does not resolve to a Plugin class")
        if loaded.name != name:
            # the name is what logs, metrics and errors report: it must be the bound one
            raise UnknownPluginError(
                f"plugin {name!r} resolves to a class named {loaded.name!r}; "
                "a plugin class's `name` must equal its registered name"
            )
        return loaded

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
            if ep is not None:
                try:
                    loaded = ep.load()
                except Exception as e:  # a broken third-party package is a config error
                    raise UnknownPluginError(
                        f"plugin {name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}"
                    ) from e
            else:
                loaded = self._from_file(name)
                if loaded is None:
                    raise UnknownPluginError(
                        f"unknown plugin {name!r}; known: {', '.join(self.names())}; "
                        f"looked in {self.where_looked(name)}"
                    )
        cls = self._check(name, loaded)
        self._classes[name] = cls
        return cls


registry = Registry()
