"""``jwt``: JSON Web Tokens (RFC 7519) signed with HMAC, RSA, RSA-PSS, ECDSA or EdDSA."""
