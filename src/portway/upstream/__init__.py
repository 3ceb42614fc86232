"""Upstreams: targets, balancers, health, circuit breakers, retries, discovery."""
