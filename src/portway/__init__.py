"""Portway: an API gateway on uvloop + llhttp."""

__version__ = "0.1.0"
