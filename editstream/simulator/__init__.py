"""A local model SIMULATOR (not a model): its HTTP server, wire, settings and answer model."""
