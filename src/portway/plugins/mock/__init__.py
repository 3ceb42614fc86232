"""Built-in plugin `mock`."""
