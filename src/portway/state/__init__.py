"""Shared state: the StateStore seam with memory and Redis backends."""
