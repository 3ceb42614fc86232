"""Built-in plugin `access_log`."""
