"""Request context, plugin contract, registry and phase runner."""
