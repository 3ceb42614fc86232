"""Built-in plugin `response_transformer`."""
