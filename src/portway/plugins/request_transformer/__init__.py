"""Built-in plugin `request_transformer`."""
