"""``scopes``: require OAuth scopes from a JWT or an introspection result."""
