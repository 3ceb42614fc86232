"""Declarative configuration: schema, YAML loader with line-accurate errors, file watcher."""
