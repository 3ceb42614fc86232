"""Built-in plugin `ip_restriction`."""
