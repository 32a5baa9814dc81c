"""Helpers that run real third-party DHT implementations on loopback, for interoperability tests."""
