"""``oidc``: OpenID Connect login (authorization code + PKCE), sessions and bearer tokens."""
