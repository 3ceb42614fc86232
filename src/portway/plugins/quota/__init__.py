"""The ``quota`` plugin."""
