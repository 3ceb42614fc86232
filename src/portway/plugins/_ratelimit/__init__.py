"""Rate-limiting building blocks shared by ``rate_limit``, ``concurrency_limit`` and ``quota``."""
