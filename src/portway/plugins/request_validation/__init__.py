"""Built-in plugin `request_validation`."""
