"""Built-in plugin `cors`."""
