"""``mtls_auth``: consumers identified by a verified TLS client certificate."""
