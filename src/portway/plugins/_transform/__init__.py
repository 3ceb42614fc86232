"""Pieces shared by ``request_transformer`` and ``response_transformer``."""
