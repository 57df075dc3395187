"""Traces to feed the pipeline: editing sessions generated from real git history."""
