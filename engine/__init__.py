"""Sluice engine: the actors that move data from sources into PostgreSQL and out to subscribers.

Nothing in this package imports the web framework; ``server`` builds on it.
"""
