"""Benchmarks (pytest-benchmark) and the summary report: ``python -m bench``."""
