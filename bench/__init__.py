"""Benchmarks that put kadnode side by side with the DHT implementations users would otherwise pick."""
