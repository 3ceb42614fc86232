"""Declarative configuration: schema, YAML loader with line-accurate errors, file watcher."""

from portway.config.pydantic_plugins import skip_pydantic_plugins

# before any config model is built (they all import this package first): pydantic would
# otherwise import importlib.metadata and scan every installed distribution for its plugins
skip_pydantic_plugins()
