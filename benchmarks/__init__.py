"""Benchmark harness: python -m benchmarks.run."""
