"""``basic_auth``: HTTP Basic (RFC 7617) against argon2id/bcrypt hashes."""
