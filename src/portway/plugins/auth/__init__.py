"""``auth``: combine authentication methods with ``any`` (first that succeeds) or ``all``."""
