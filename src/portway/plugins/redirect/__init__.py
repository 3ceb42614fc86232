"""Built-in plugin `redirect`."""
