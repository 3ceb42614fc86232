"""``key_auth``: API keys in a header or query parameter, matched by SHA-256 digest."""
