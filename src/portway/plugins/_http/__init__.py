"""Small HTTP field helpers shared by the edge plugins (cors, compression)."""
