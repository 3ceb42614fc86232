"""The ``rate_limit`` plugin."""
