"""The ``concurrency_limit`` plugin."""
