"""Shared building blocks of the identity plugins (authentication and authorization).

Nothing here is a plugin: it holds credential hashing, the consumer-credential models that
:func:`portway.runtime.consumers.build_consumer_directory` validates, identity-header handling,
token extraction and the 401/403 error shapes, so every auth plugin behaves the same way.
"""
