"""Built-in plugin `request_id`."""
