"""Sluice benchmarks (issue #6). Run with ``just bench``."""
