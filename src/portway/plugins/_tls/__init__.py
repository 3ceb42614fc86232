"""Built-in steps derived from a route's ``match.tls`` (not configurable plugins)."""
