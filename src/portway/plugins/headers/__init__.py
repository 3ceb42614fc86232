"""Built-in plugin `headers`."""
