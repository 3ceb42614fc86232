"""Built-in plugin `fault_injection`."""
