"""``oauth2_introspection``: opaque bearer tokens checked with RFC 7662 token introspection."""
