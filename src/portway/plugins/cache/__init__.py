"""RFC 9111 response caching (``cache`` plugin) with memory, Redis and tiered stores."""
