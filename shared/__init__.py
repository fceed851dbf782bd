"""Contracts, configuration, Redis store and the producer client of the warm-transfer service."""
