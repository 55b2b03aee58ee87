"""tsprov's LocalStack extension: see providers.py."""
