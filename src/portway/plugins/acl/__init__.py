"""``acl``: allow or deny consumers by group."""
