"""Built-in plugin `request_termination`."""
