"""``identity_headers``: forward token claims to the upstream as headers, unspoofably."""
