"""JSON document helpers shared by body-rewriting plugins (transformers, aggregation)."""
