"""Built-in plugin `compression`."""
