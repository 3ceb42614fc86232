"""Route compilation and matching."""
